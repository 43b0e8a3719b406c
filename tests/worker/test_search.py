"""Search studies (issue 29): Optuna asks, screening jobs train, results are told back."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from archscreen.store import search as search_store
from archscreen.store import studies as study_store
from archscreen.store.models import Candidate
from tests.worker.procs import BACKENDS, backend_deployment, deployment, wait_for

SPACE = yaml.safe_load((Path(__file__).parents[2] / "examples/spaces/mlp_space.yaml").read_text())
# tiny screenings: the test is about the search's bookkeeping, not the scores
SCREENING = {
    "max_epochs": 1,
    "patience": 50,
    "batch_size": 64,
    "seeds": [0],
    "base": "sgd",
    "max_steps_per_epoch": 5,
}


def _search_study(d, trials: int = 4, parallel: int = 2, auto: bool = True) -> int:  # type: ignore[no-untyped-def]
    with d.db.session() as s:
        return study_store.create_study(
            s,
            d.tenant_id,
            name="search",
            dataset="digits",
            screening=SCREENING,
            policy={"top_k": 1, "auto": auto, "starts": 1},
            space=SPACE,
            search={"sampler": "tpe", "trials": trials, "parallel": parallel, "seed": 3},
        ).id


def _candidates(d) -> list[Candidate]:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    with d.db.session() as s:
        rows = list(s.scalars(select(Candidate).order_by(Candidate.id)))
        s.expunge_all()
        return rows


@pytest.mark.parametrize("backend", BACKENDS)
def test_search_step_twice_makes_no_second_candidate(backend: str, tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from archscreen.store.models import Base
    from archscreen.worker.search import optuna_study, search_step

    with backend_deployment(backend, tmp_path) as d:  # no worker: the jobs stay queued
        study_id = _search_study(d)
        first = search_step(d.db, d.settings, study_id)
        again = search_step(d.db, d.settings, study_id)
        assert len(first) == 2 and again == []  # parallel=2 running: nothing more is asked
        cands = _candidates(d)
        assert [c.id for c in cands] == first and all(c.params for c in cands)
        with d.db.session() as s:
            study = study_store.study_by_id(s, study_id)
            links = search_store.links_of(s, study_id)
        assert study is not None and sorted(links) == [0, 1]
        assert len(optuna_study(d.settings, study).trials) == 2
        with d.db.engine.connect() as conn:  # Optuna's tables are not archscreen's schema
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_step_links_a_trial_asked_before_a_crash_and_respects_the_lock(tmp_path: Path) -> None:
    from archscreen.core.spec.space import parse_space, sample
    from archscreen.worker.search import optuna_study, search_step

    with deployment(tmp_path) as d:
        study_id = _search_study(d, parallel=1)
        with d.db.session() as s:
            study = study_store.study_by_id(s, study_id)
            assert study is not None
            assert search_store.claim_step(s, study_id, 60.0)
        assert search_step(d.db, d.settings, study_id) == []  # another step holds the lock
        with d.db.session() as s:
            search_store.release_step(s, study_id)
        # a step that died between Optuna's ask and archscreen's commit
        trial = optuna_study(d.settings, study).ask()
        sample(parse_space(SPACE), trial)
        made = search_step(d.db, d.settings, study_id)
        assert len(made) == 1  # the orphan trial became the candidate; nothing else was asked
        assert _candidates(d)[0].params == trial.params
        assert len(optuna_study(d.settings, study).trials) == 1


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_search_study_asks_tells_and_promotes(backend: str, tmp_path: Path) -> None:
    from optuna.trial import TrialState

    from archscreen.worker.search import optuna_study

    with backend_deployment(backend, tmp_path) as d:
        d.start_worker(concurrency=1)
        d.wait_worker_ready()
        study_id = _search_study(d)
        study = d.start_search(study_id)
        wait_for(lambda: d.auto_promoted(study_id), 240, "the search to finish and promote", d.logs)
        trials = optuna_study(d.settings, study).trials
        assert len(trials) == 4 and all(t.state != TrialState.RUNNING for t in trials)
        with d.db.session() as s:
            links = search_store.links_of(s, study_id)
            progress = search_store.progress_of(s, [study_id])[study_id]
        assert sorted(links) == [0, 1, 2, 3] and all(link.told for link in links.values())
        cands = _candidates(d)
        linked = {link.candidate_id for link in links.values() if link.candidate_id}
        assert {c.id for c in cands} == linked  # one candidate per distinct point, none extra
        by_id = {c.id: c.params for c in cands}
        for t in trials:
            if t.state == TrialState.COMPLETE:
                assert by_id[links[t.number].candidate_id] == t.params
        best = min((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
        assert (progress.asked, progress.told) == (4, 4)
        assert progress.best_value == pytest.approx(best.value) and progress.best_params == best.params

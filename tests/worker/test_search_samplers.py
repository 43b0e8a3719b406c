"""Search samplers (issue 29): grid visits every point of a discrete space once; NSGA-II tells two
objectives (the screening's val_loss and the candidate's parameter count)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from archscreen.store import search as search_store
from archscreen.store import studies as study_store
from tests.worker.procs import deployment, wait_for
from tests.worker.test_search import SCREENING, SPACE, _candidates

# a discrete space: depth 1-2, each layer its own width: a grid of 2 x 2 x 2 = 8 points (width[1]
# exists in the grid even where depth is 1: those points give the same spec, one shared candidate)
GRID_SPACE: dict[str, Any] = {
    "name": "grid_space",
    "space": {},
    "layers": [
        "flatten",
        {
            "repeat": {
                "count": {"int": [1, 2], "name": "depth"},
                "share": False,
                "layers": [{"linear": {"out": {"choice": [16, 32], "name": "width"}}}, "relu"],
            }
        },
    ],
    "head": "classifier",
}


def _study(d, search: dict[str, Any], space: dict[str, Any]) -> int:  # type: ignore[no-untyped-def]
    with d.db.session() as s:
        return study_store.create_study(
            s,
            d.tenant_id,
            name="search",
            dataset="digits",
            screening=SCREENING,
            policy={"top_k": 1, "auto": False, "starts": 1},
            space=space,
            search=search,
        ).id


def test_grid_sampler_asks_every_grid_point_once(tmp_path: Path) -> None:
    from archscreen.core.spec.space import grid_search_space, grid_size, parse_space
    from archscreen.worker.search import optuna_study, search_step

    grid = grid_search_space(parse_space(GRID_SPACE))
    assert grid_size(parse_space(GRID_SPACE)) == 8
    with deployment(tmp_path) as d:  # no worker: the step asks, the jobs stay queued
        study_id = _study(d, {"sampler": "grid", "trials": 8, "parallel": 8, "seed": 0}, GRID_SPACE)
        made = search_step(d.db, d.settings, study_id)
        with d.db.session() as s:
            study = study_store.study_by_id(s, study_id)
        assert study is not None
        trials = optuna_study(d.settings, study).trials
        # each grid point asked once, none twice (GridSampler records the point's index)
        assert sorted(t.system_attrs["grid_id"] for t in trials) == list(range(8))
        suggested = sorted(tuple(t.params.get(k) for k in sorted(grid)) for t in trials)
        every = itertools.product(*(grid[k] for k in sorted(grid)))
        # a point of depth 1 does not suggest width[1]
        expected = sorted(
            tuple(
                v if not (k == "width[1]" and p[0] == 1) else None
                for k, v in zip(sorted(grid), p, strict=True)
            )
            for p in every
        )
        assert suggested == expected, suggested
        # depth 1 ignores width[1]: 2 + 4 distinct specs, one candidate each
        assert len(made) == 6 and len(_candidates(d)) == 6


def test_a_stopped_search_asks_nothing_more_and_ends_when_its_trials_are_told(tmp_path: Path) -> None:
    """POST …/search/stop's effect on the step: the trials asked before the stop end (here cancelled,
    as the client's cancel_study does), no trial replaces them, and the search is over."""
    from archscreen.store import jobs as job_store
    from archscreen.store.models import Job
    from archscreen.worker.search import search_step

    with deployment(tmp_path) as d:  # no worker: the step asks, the jobs stay queued
        study_id = _study(d, {"sampler": "random", "trials": 6, "parallel": 2, "seed": 0}, SPACE)
        assert len(search_step(d.db, d.settings, study_id)) == 2
        with d.db.session() as s:
            search_store.stop(s, study_id)
            for job in s.query(Job).all():
                assert job_store.request_cancel(s, job.id) == "cancelled"  # queued: at once
        assert search_step(d.db, d.settings, study_id) == []
        with d.db.session() as s:
            progress = search_store.progress_of(s, [study_id])[study_id]
            study = study_store.study_by_id(s, study_id)
            assert study is not None and study.search is not None
            assert search_store.search_done(s, study_id, study.search)
            assert search_store.studies_searching(s) == []  # the maintenance pass leaves it alone
        assert (progress.asked, progress.told, progress.failed, progress.stopped) == (2, 2, 2, True)


def test_grid_rejects_a_continuous_space() -> None:
    from archscreen.core.spec import SpecError
    from archscreen.core.spec.space import grid_size, parse_space

    with pytest.raises(SpecError, match="continuous: a grid needs step"):
        grid_size(parse_space(SPACE))  # dropout_p is a float range without step


@pytest.mark.slow
@pytest.mark.parametrize("second", ["params", "latency"])
def test_nsga2_tells_val_loss_and_a_second_objective(tmp_path: Path, second: str) -> None:
    """NSGA-II tells two values: val_loss and the parameter count (the candidate's) or the forward
    latency each screening run measured on the worker (``result.latency_ms``)."""
    from optuna.trial import TrialState

    from archscreen.store.models import Job
    from archscreen.worker.search import optuna_study

    search = {"sampler": "nsga2", "objectives": ["val_loss", second], "trials": 3, "parallel": 3}
    with deployment(tmp_path) as d:
        d.start_worker(concurrency=1)
        d.wait_worker_ready()
        study_id = _study(d, {**search, "seed": 5}, SPACE)
        study = d.start_search(study_id)

        def all_told() -> bool:
            with d.db.session() as s:
                return search_store.told_count(s, study_id) == 3

        wait_for(all_told, 240, "three NSGA-II trials told", d.logs)
        ostudy = optuna_study(d.settings, study)
        assert len(ostudy.directions) == 2
        with d.db.session() as s:
            links = search_store.links_of(s, study_id)
            results = {j.candidate_id: j.result for j in s.query(Job).filter(Job.kind == "screen")}
        by_id = {c.id: c for c in _candidates(d)}
        complete = [t for t in ostudy.trials if t.state == TrialState.COMPLETE]
        assert complete  # tiny screenings of valid points succeed
        for t in complete:
            cid = links[t.number].candidate_id
            assert cid is not None
            expected = float(by_id[cid].num_params) if second == "params" else results[cid]["latency_ms"]
            assert expected > 0
            assert t.values == [pytest.approx(links[t.number].value), pytest.approx(expected)]


@pytest.mark.slow
def test_budget_stops_asking_and_the_study_promotes(tmp_path: Path) -> None:
    """A CPU-seconds budget smaller than one trial: the first trial (parallel 1) runs to its end,
    nothing more is asked, and the usual promotion runs with 1 of 6 trials told."""
    search = {"sampler": "random", "trials": 6, "parallel": 1, "seed": 2, "budget_cpu_s": 0.01}
    with deployment(tmp_path) as d:
        d.start_worker(concurrency=1)
        d.wait_worker_ready()
        with d.db.session() as s:
            study = study_store.create_study(
                s,
                d.tenant_id,
                name="budget",
                dataset="digits",
                screening=SCREENING,
                policy={"top_k": 1, "auto": True, "starts": 1},
                space=SPACE,
                search=search,
            )
        d.start_search(study.id)
        wait_for(
            lambda: d.auto_promoted(study.id),
            240,
            "the budget to end the search and the study to promote",
            d.logs,
        )
        with d.db.session() as s:
            progress = search_store.progress_of(s, [study.id])[study.id]
            spent = search_store.cpu_spent(s, study.id)
        assert progress.asked == progress.told and progress.told < 6
        assert progress.cpu_seconds == spent and spent >= 0.01

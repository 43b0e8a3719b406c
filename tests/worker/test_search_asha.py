"""ASHA across a search study's trials (issue 29, item 3), with real worker processes.

A 9-trial search with η = 3, r = 1 and a 9-epoch cap: every run trains to 1 epoch and is paused;
the best third of each rung continues from its checkpoint; the runs never promoted are stopped at
the end; Optuna hears every rung (``trial.report``) and is told PRUNED for a stopped run, COMPLETE
for one that reached the top rung. The worker is killed with SIGKILL half-way: no run is lost or
trained twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from archscreen.core.asha import AshaScheduler
from archscreen.store import ranking as ranking_store
from archscreen.store import search as search_store
from archscreen.store import studies as study_store
from archscreen.store.models import Candidate, EpochMetric, Job
from tests.worker.procs import BACKENDS, Deployment, backend_deployment, children_of, deployment, wait_for

SPACE = yaml.safe_load((Path(__file__).parents[2] / "examples/spaces/mlp_space.yaml").read_text())
SCREENING = {
    "max_epochs": 9,
    "patience": 50,
    "batch_size": 64,
    "seeds": [0],
    "base": "sgd",
    "max_steps_per_epoch": 5,
}
TRIALS = 9
# Where the compute figure of docs/search.md ("In the service") is written when the test runs.
FIGURE_ENV = "ARCHSCREEN_ASHA_FIGURE"


def _study(d: Deployment, *, asha: Any = None, name: str = "search") -> int:
    search: dict[str, Any] = {"sampler": "tpe", "trials": TRIALS, "parallel": 2, "seed": 11}
    if asha is not None:
        search["asha"] = asha
    with d.db.session() as s:
        return study_store.create_study(
            s,
            d.tenant_id,
            name=name,
            dataset="digits",
            screening=SCREENING,
            policy={"top_k": 1, "auto": True, "starts": 1},
            space=SPACE,
            search=search,
        ).id


def _jobs(d: Deployment, study_id: int) -> list[Job]:
    with d.db.session() as s:
        rows = list(
            s.scalars(select(Job).where(Job.study_id == study_id, Job.kind == "screen").order_by(Job.id))
        )
        s.expunge_all()
        return rows


def _kill_worker(d: Deployment, name: str) -> None:
    """SIGKILL the worker's main process and every job process (its process group)."""
    proc = d.procs.pop(name)
    kids = children_of(proc.pid)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in kids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(10)


def _epochs_trained(d: Deployment, study_id: int) -> int:
    """Epochs trained by the study's screening runs, counted from their stored per-epoch rows."""
    with d.db.session() as s:
        return len(
            s.scalars(
                select(EpochMetric.id)
                .join(Job, Job.id == EpochMetric.job_id)
                .where(Job.study_id == study_id, Job.kind == "screen")
            ).all()
        )


def _check_rungs(asha: AshaScheduler) -> dict[int, int]:
    """ASHA's rule, read back from the stored state: at each rung, the best ⌊n/η⌋ of the n runs
    that reported there went on to the next rung. Returns runs per rung reached (by epochs)."""
    runs = asha.state_dict()["runs"]
    reached: dict[int, int] = {}
    for k, epochs in enumerate(asha.rungs):
        at = [r for r in runs if len(r["values"]) > k]
        reached[epochs] = len(at)
        if k == len(asha.rungs) - 1:
            break
        best = sorted(at, key=lambda r: (r["values"][k] is None, r["values"][k] or 0.0))
        for r in best[: len(at) // asha.reduction_factor]:
            assert len(r["values"]) > k + 1, f"run {r['id']} was in rung {k}'s top 1/η and not promoted"
    return reached


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_asha_search_pauses_promotes_stops_and_survives_a_kill(backend: str, tmp_path: Path) -> None:
    from optuna.trial import TrialState

    from archscreen.worker.search import optuna_study

    with backend_deployment(backend, tmp_path) as d:
        d.start_worker("w1", concurrency=1)
        d.wait_worker_ready()
        study_id = _study(d)
        d.start_search(study_id)
        # kill -9 once a promoted run (rung 1: 3 epochs) is out, in the middle of the search
        wait_for(
            lambda: any(
                j.config.get("target_epochs") == 3 and j.state in ("queued", "running")
                for j in _jobs(d, study_id)
            ),
            240,
            "a first promotion",
            d.logs,
        )
        assert any(j.state == "paused" for j in _jobs(d, study_id))  # paused runs wait, checkpoint kept
        paused = [j for j in _jobs(d, study_id) if j.state == "paused"]
        assert all((d.job_dir(j.id) / "checkpoint.pt").exists() for j in paused)
        _kill_worker(d, "w1")
        d.start_worker("w2", concurrency=1)
        wait_for(lambda: d.auto_promoted(study_id), 420, "the ASHA search to end and promote", d.logs)

        with d.db.session() as s:
            study = study_store.study_by_id(s, study_id)
            asha = AshaScheduler.from_state(search_store.asha_state(s, study_id) or {})
            links = search_store.links_of(s, study_id)
            ranked, unranked = ranking_store.rank_study(s, study_id, "val_loss")
            cands = {c.id for c in s.scalars(select(Candidate).where(Candidate.study_id == study_id))}
        assert study is not None
        jobs = _jobs(d, study_id)
        trials = optuna_study(d.settings, study).trials
        trained = _epochs_trained(d, study_id)
        curves = {j.id: [e for e, _ in d.curves(j.id)] for j in jobs}
        stopped_ckpts = [(d.job_dir(j.id) / "checkpoint.pt").exists() for j in jobs if j.state == "stopped"]

    # nothing lost, nothing doubled: one run per distinct point, each trained exactly to its rung
    assert len(trials) == TRIALS and sorted(links) == list(range(TRIALS))
    assert {int(r["id"]) for r in asha.state_dict()["runs"]} == cands == {j.candidate_id for j in jobs}
    assert asha.done and asha.rungs == [1, 3, 9]
    n = len(cands)
    reached = _check_rungs(asha)
    assert reached[1] == n and reached[3] >= n // 3 and reached[9] >= max(reached[3] // 3, 1)
    for j in jobs:
        values = asha.values(str(j.candidate_id))
        rung_epochs = asha.rungs[len(values) - 1]
        assert j.config["target_epochs"] == rung_epochs
        assert j.state == ("succeeded" if rung_epochs == 9 else "stopped"), (j.id, j.state, j.error)
        assert j.epoch == rung_epochs  # patience 50: no run stops on its own
        assert (j.result or {}).get("asha", {}).get("epochs") == rung_epochs
    assert {j.state for j in jobs} == {"succeeded", "stopped"}  # paused -> stopped at the end
    assert stopped_ckpts and not any(stopped_ckpts)  # a stopped run's checkpoint goes, as a finished one's
    # each run's epochs are one unbroken curve (continued from its checkpoint at every rung)
    assert all(curves[j.id] == list(range(1, j.epoch + 1)) for j in jobs)
    assert trained == sum(j.epoch for j in jobs) < TRIALS * SCREENING["max_epochs"]
    # Optuna heard each rung, and was told PRUNED for a stopped run, COMPLETE for a completed one
    for t in trials:
        cid = links[t.number].candidate_id
        assert cid is not None
        status = asha.status(str(cid))
        values = asha.values(str(cid))
        assert t.state == (TrialState.COMPLETE if status == "completed" else TrialState.PRUNED), t.number
        assert sorted(t.intermediate_values) == [asha.rungs[k] for k, v in enumerate(values) if v is not None]
    assert all(link.told in ("complete", "pruned") for link in links.values())
    # ranking: the runs that reached the top rung first, then rung 3's, then rung 1's
    order = [r.rung_epochs for r in ranked]
    assert order == sorted(order, reverse=True) and order[0] == 9 and not unranked


@pytest.mark.slow
def test_asha_search_trains_fewer_epochs_than_one_full_run_each(tmp_path: Path) -> None:
    """The compute figure of docs/search.md, measured: epochs trained by the 9-trial search with
    ASHA (η = 3, r = 1) and without it (one full 9-epoch run per trial), same sampler seed."""
    with deployment(tmp_path) as d:
        d.start_worker("w", concurrency=1)
        d.wait_worker_ready()
        full = _study(d, asha=False, name="full")
        d.start_search(full)
        wait_for(lambda: d.auto_promoted(full), 420, "the full search", d.logs)
        halving = _study(d, name="asha")
        d.start_search(halving)
        wait_for(lambda: d.auto_promoted(halving), 420, "the ASHA search", d.logs)
        full_epochs, asha_epochs = _epochs_trained(d, full), _epochs_trained(d, halving)
        full_s = sum(j.elapsed_s for j in _jobs(d, full))
        asha_s = sum(j.elapsed_s for j in _jobs(d, halving))
        assert all(j.config == {} for j in _jobs(d, full))  # asha off: no rungs
    assert asha_epochs < full_epochs
    figure = {
        "trials": TRIALS,
        "max_epochs": SCREENING["max_epochs"],
        "asha_epochs": asha_epochs,
        "full_epochs": full_epochs,
        "epochs_fraction": round(asha_epochs / full_epochs, 3),
        "asha_train_s": round(asha_s, 2),
        "full_train_s": round(full_s, 2),
    }
    print("asha_service_figure:", json.dumps(figure))
    if os.environ.get(FIGURE_ENV):
        Path(os.environ[FIGURE_ENV]).write_text(json.dumps(figure) + "\n")


def _finish_rung(d: Deployment, job_id: int, value: float, *, final: bool) -> None:
    """What a job process does at the end of its rung, without training: claim, then pause (or
    finish, at the top rung) with the rung's value as its result."""
    from archscreen.store import jobs as job_store

    with d.db.session() as s:
        job = job_store.claim(s, job_id, "test-owner", 60)
        assert job is not None
        epochs = job.config["target_epochs"]
        result = {"val_loss": value, "asha": {"epochs": epochs, "key": "val-loss", "value": value}}
        if final:
            assert job_store.finish(s, job_id, "test-owner", "succeeded", result=result)
        else:
            assert job_store.pause(s, job_id, "test-owner", result=result)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_step_promotes_once_however_often_it_runs_and_stops_the_rest(
    backend: str, tmp_path: Path
) -> None:
    """The decisions alone (no worker: the test plays the job processes), each step repeated:
    3 trials, η = 3, rungs 1 and 3; the best at rung 1 is promoted once, the others stopped."""
    from optuna.trial import TrialState

    from archscreen.worker.search import optuna_study, search_step

    with backend_deployment(backend, tmp_path) as d:
        with d.db.session() as s:
            study = study_store.create_study(
                s,
                d.tenant_id,
                name="steps",
                dataset="digits",
                screening={**SCREENING, "max_epochs": 3},
                policy={"top_k": 1, "auto": False},
                space=SPACE,
                search={"trials": 3, "parallel": 3, "seed": 5},
            )
        assert len(search_step(d.db, d.settings, study.id)) == 3
        assert search_step(d.db, d.settings, study.id) == []  # again: nothing more
        jobs = _jobs(d, study.id)
        assert [(j.state, j.config) for j in jobs] == [("queued", {"target_epochs": 1})] * 3
        for j, value in zip(jobs, (0.3, 0.1, 0.2), strict=True):
            _finish_rung(d, j.id, value, final=False)
        for _ in range(3):  # a repeated step promotes nothing twice
            assert search_step(d.db, d.settings, study.id) == []
        after = {j.id: j for j in _jobs(d, study.id)}
        best = jobs[1].id
        assert [(i, a.state, a.config["target_epochs"]) for i, a in after.items()] == [
            (jobs[0].id, "paused", 1),
            (best, "queued", 3),
            (jobs[2].id, "paused", 1),
        ]
        assert after[best].attempts == 0
        _finish_rung(d, best, 0.05, final=True)
        search_step(d.db, d.settings, study.id)
        search_step(d.db, d.settings, study.id)
        states = {j.id: j.state for j in _jobs(d, study.id)}
        assert states == {jobs[0].id: "stopped", best: "succeeded", jobs[2].id: "stopped"}
        trials = optuna_study(d.settings, study).trials
        with d.db.session() as s:
            links = search_store.links_of(s, study.id)
            assert search_store.search_done(s, study.id, study.search)  # type: ignore[arg-type]
    by_job = {links[t.number].candidate_id: t for t in trials}
    cand = {j.id: j.candidate_id for j in jobs}
    assert by_job[cand[best]].state == TrialState.COMPLETE and by_job[cand[best]].value == pytest.approx(0.05)
    assert by_job[cand[best]].intermediate_values == {1: 0.1, 3: 0.05}
    for other, value in ((jobs[0].id, 0.3), (jobs[2].id, 0.2)):
        assert by_job[cand[other]].state == TrialState.PRUNED
        assert by_job[cand[other]].intermediate_values == {1: value}

"""End to end on real processes: `archscreen api` + `archscreen worker` (Celery prefork children),
on SQLite + the embedded filesystem broker and on PostgreSQL + Redis."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from archscreen.client import Client
from tests.services import BACKENDS, RunningService, service_backend

pytestmark = pytest.mark.slow

SPECS = [
    {"name": "logreg", "layers": ["flatten"], "head": "classifier"},
    {"name": "mlp", "layers": ["flatten", {"linear": 32}, "relu"], "head": "classifier"},
    {"name": "cnn", "layers": [{"conv1d": {"out": 8, "kernel": 5}}, "relu", "flatten"], "head": "classifier"},
]
# Epochs of about a second (batch size 8): long enough to cancel or kill mid-run.
LONG = {
    "name": "long-cnn",
    "layers": [
        {"conv1d": {"out": 64, "kernel": 5, "padding": 2}},
        "relu",
        {"conv1d": {"out": 64, "kernel": 5, "padding": 2}},
        "relu",
        "flatten",
        {"linear": 64},
        "relu",
    ],
    "head": "classifier",
}


@pytest.fixture(params=BACKENDS)
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningService]:
    yield from service_backend(request, tmp_path)


def wait_for(predicate, timeout: float, what: str, svc: RunningService):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}\n{svc.logs()}")


def test_study_of_three_finishes_and_a_cancel_stops_within_an_epoch(service: RunningService) -> None:
    service.start_api()
    service.start_worker(concurrency=2)
    service.wait_ready()
    with Client(service.url, service.token) as c:
        study = c.create_study(
            "e2e",
            dataset="mnist1d",
            screening={"max_epochs": 3, "patience": 3, "batch_size": 64, "seeds": [0]},
        )
        added = c.add_candidates(study.id, [{"spec": s} for s in SPECS])
        assert [a.state for a in added] == ["queued"] * 3
        done = c.wait(study.id, timeout=240, poll_s=0.5)
        assert [d.state for d in done] == ["succeeded"] * 3, service.logs()
        for cand in done:
            d = c.candidate(cand.id)
            run = d.runs[0]
            assert run.attempts == 1 and run.progress.fraction == 1.0
            assert [p.epoch for p in run.curves] == list(range(1, run.result["epochs"] + 1))
            assert all(p.val_loss is not None and p.val_loss > 0 for p in run.curves)
            assert d.metrics["val_loss"] == pytest.approx(run.result["val_loss"])
            assert 0 < d.metrics["test_accuracy"] <= 1
            assert len(d.switch_posterior) == 10 and d.preferred_lr > 0
            assert d.progress.eta_s == 0.0

        # a long run, cancelled while it trains: it stops within one epoch and keeps its curves
        slow = c.create_study(
            "e2e-cancel", dataset="mnist1d", screening={"max_epochs": 500, "patience": 500, "batch_size": 8}
        )
        cid = c.add_candidates(slow.id, [{"spec": LONG}])[0].id
        epoch_at_cancel = wait_for(
            lambda: (
                (r := c.candidate(cid).runs[0]).state == "running"
                and r.progress.epoch >= 2
                and r.progress.epoch
            ),
            120,
            "the long run to reach epoch 2",
            service,
        )
        c.cancel_candidate(cid)
        final = wait_for(
            lambda: (d := c.candidate(cid)).state == "cancelled" and d, 60, "the cancel to land", service
        )
        run = final.runs[0]
        assert run.cancel_requested and run.result["stopped_because"] == "cancelled"
        assert len(run.curves) <= epoch_at_cancel + 1  # stopped within one epoch of the request
        assert len(run.curves) >= epoch_at_cancel  # partial curves kept


def test_worker_killed_mid_job_is_reaped_and_the_job_resumes_from_its_checkpoint(
    service: RunningService,
) -> None:
    service.start_api()
    service.start_worker("w1", concurrency=1)
    service.wait_ready()
    with Client(service.url, service.token) as c:
        study = c.create_study(
            "resume",
            dataset="mnist1d",
            screening={"max_epochs": 14, "patience": 50, "max_steps_per_epoch": 40},
        )
        cid = c.add_candidates(study.id, [{"spec": LONG}])[0].id
        before = wait_for(
            lambda: (r := c.candidate(cid).runs[0]).progress.epoch >= 3 and r,
            120,
            "epoch 3",
            service,
        )
        service.kill("w1", signal.SIGKILL)  # the whole worker: main process and its child
        service.start_worker("w2", concurrency=1)
        final = wait_for(
            lambda: (d := c.candidate(cid)).state in ("succeeded", "failed") and d,
            180,
            "the resumed job",
            service,
        )
    run = final.runs[0]
    assert run.state == "succeeded", run.error
    assert run.attempts == 2
    assert [p.epoch for p in run.curves] == list(range(1, 15))
    # epochs finished before the kill were not retrained (their timings are the first attempt's)
    first = {p.epoch: p.seconds for p in before.curves}
    assert all(run.curves[e - 1].seconds == s for e, s in first.items() if e < len(first))


def test_four_candidates_auto_promote_the_top_two_to_tuning_from_three_starts(
    service: RunningService,
) -> None:
    service.start_api()
    service.start_worker(concurrency=2)
    service.wait_ready()
    wide = {"name": "mlp-wide", "layers": ["flatten", {"linear": 96}, "relu"], "head": "classifier"}
    with Client(service.url, service.token) as c:
        study = c.create_study(
            "auto",
            dataset="mnist1d",
            screening={"max_epochs": 4, "patience": 4, "batch_size": 64},
            # Alrao-Adam, then fd2-adam from 3 starts on its posterior (the multi-start tuning stage)
            policy={"top_k": 2, "auto": True, "tuning_start": "multi"},
        )
        c.add_candidates(study.id, [{"spec": s} for s in [*SPECS, wide]])
        c.wait(study.id, timeout=240, poll_s=0.5)
        jobs = wait_for(
            lambda: (
                (js := c.tuning_jobs(study.id))
                and len(js) == 6
                and all(j.state == "succeeded" for j in js)
                and js
            ),
            300,
            "six tuning jobs (two candidates, three starts each) to succeed",
            service,
        )
        ranking = c.ranking(study.id)
        top2 = [r.candidate_id for r in ranking.data[:2]]
        assert sorted(j.candidate_id for j in jobs) == sorted(top2 * 3)
        assert c.study(study.id).auto_promoted
        assert c.study(study.id).policy.tuner == "fd2-adam"
        board = c.leaderboard(study.id)
        for cid in top2:
            starts = {j.start: c.tuning_job(j.id) for j in jobs if j.candidate_id == cid}
            assert list(starts) == ["p50", "p25", "p75"]
            lrs = [starts[s].result["init_lr"] for s in ("p25", "p50", "p75")]
            assert lrs == sorted(lrs) and lrs[0] < lrs[2]  # the posterior's quartiles, spread
            for detail in starts.values():
                assert detail.result["init_lr"] == pytest.approx(detail.init_lr, rel=1e-6)
                assert detail.result["seed"] == 0  # one training seed: only the start differs
                assert detail.result["recommended_lr"] > 0 and detail.result["trajectory"]
                assert [p.epoch for p in detail.curves] == list(range(1, detail.result["epochs"] + 1))
                assert all("lr" in p.extra for p in detail.curves)
            # the candidate's answer is its start with the lowest validation loss
            chosen = min(starts.values(), key=lambda d: (d.result["val_loss"], d.seed))
            row = next(r for r in board.data if r.candidate_id == cid)
            assert row.tuning_job_id == chosen.id and row.tuning_start == chosen.start
            assert row.tuned_score == pytest.approx(chosen.result["val_loss"])
            print(
                f"\ncandidate {cid}: "
                + ", ".join(
                    f"{s} lr {d.init_lr:.3g} val {d.result['val_loss']:.4f}" for s, d in starts.items()
                )
            )
        assert board.count == 4 and board.best.candidate_id in top2
        assert board.best.recommended_lr > 0 and board.best.tuned_score is not None
        # promoting again (by hand) returns the same jobs: nothing doubles
        assert sorted(j.id for j in c.promote(study.id, top_k=2)) == sorted(j.id for j in jobs)


def test_a_job_over_its_soft_time_limit_fails_with_the_reason(tmp_path: Path) -> None:
    svc = RunningService(
        tmp_path,
        f"sqlite:///{tmp_path / 'data' / 'archscreen.db'}",
        None,
        job_soft_time_limit_s="10",
        job_time_limit_s="60",
    )
    try:
        svc.cli("migrate")
        svc.token = svc.cli("token", "create", "--tenant", "t").stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
        svc.start_api()
        svc.start_worker(concurrency=1)
        svc.wait_ready()
        with Client(svc.url, svc.token) as c:
            study = c.create_study(
                "limits",
                dataset="mnist1d",
                screening={"max_epochs": 500, "patience": 500, "batch_size": 8, "max_steps_per_epoch": 40},
            )
            cid = c.add_candidates(study.id, [{"spec": LONG}])[0].id
            final = wait_for(
                lambda: (d := c.candidate(cid)).state not in ("queued", "running") and d,
                120,
                "the time limit",
                svc,
            )
        run = final.runs[0]
        assert run.state == "failed" and "time limit" in run.error
        assert run.curves, "the epochs before the limit are kept"
    finally:
        svc.stop()

"""Contract tests of the ASHA rung scheduler (core/asha.py): the rungs, Algorithm 2's promotions
(including a paused run promoted later), the finite-pool leader switch, the one-full-run-each
reduction, finishing, and the serialisable state."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from archscreen.core.asha import AshaScheduler, Job, rung_value, rungs_for


@pytest.mark.parametrize(
    ("max_epochs", "min_epochs", "eta", "expected"),
    [
        (27, 1, 3, [1, 3, 9, 27]),
        (30, 1, 3, [1, 3, 9, 27, 30]),
        (60, 1, 2, [1, 2, 4, 8, 16, 32, 60]),
        (30, 3, 3, [3, 9, 27, 30]),
        (25, 3, 2, [3, 6, 12, 24, 25]),
        (10, 1, 1, [1, 10]),
        (5, 5, 3, [5]),
    ],
)
def test_rungs_are_r_times_eta_to_the_i_then_the_budget(
    max_epochs: int, min_epochs: int, eta: int, expected: list[int]
) -> None:
    assert rungs_for(max_epochs, min_epochs, eta) == expected


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_epochs": 0}, "max_epochs must be an integer >= 1"),
        ({"max_epochs": 9, "min_epochs": 0}, r"min_epochs must be an integer in \[1, max_epochs=9\]"),
        ({"max_epochs": 9, "min_epochs": 10}, r"min_epochs must be an integer in \[1, max_epochs=9\]"),
        ({"max_epochs": 9, "reduction_factor": 0}, "reduction_factor must be an integer >= 1"),
        ({"max_epochs": 9, "reduction_factor": 2.5}, "reduction_factor must be an integer >= 1"),
    ],
)
def test_bad_arguments_are_refused_with_their_name(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AshaScheduler(**kwargs)


def _run(asha: AshaScheduler, value: float) -> Job:
    job = asha.get_job()
    assert job is not None
    asha.report(job.run_id, value)
    return job


def test_a_paused_run_is_promoted_later_when_enough_runs_arrive_below_it() -> None:
    # Algorithm 2 with eta = 3: a rung promotes the best floor(n/3) of the n runs that reached it.
    asha = AshaScheduler(9, min_epochs=1, reduction_factor=3)
    assert asha.rungs == [1, 3, 9]
    asha.add_runs(["a", "b", "c", "d", "e", "f"])
    assert _run(asha, 0.1) == Job("a", 0, 1, promoted=False)
    assert asha.status("a") == "paused"  # alone at rung 0: floor(1/3) = 0, it waits
    assert _run(asha, 0.5) == Job("b", 0, 1, promoted=False)
    assert asha.status("a") == "paused"  # floor(2/3) = 0: still waits
    assert _run(asha, 0.9) == Job("c", 0, 1, promoted=False)
    assert asha.promotable(0) == ["a"]  # now the top third of 3 runs
    assert _run(asha, 0.05) == Job("a", 1, 3, promoted=True)  # promotion before any new run
    assert asha.values("a") == [0.1, 0.05]
    # a is alone at rung 1 and rung 0's top third is a, promoted already: new runs start
    assert _run(asha, 0.2) == Job("d", 0, 1, promoted=False)
    assert _run(asha, 0.7) == Job("e", 0, 1, promoted=False)
    assert _run(asha, 0.3) == Job("f", 0, 1, promoted=False)
    # 6 runs at rung 0: the top two are a (promoted) and d, which is promoted now
    assert _run(asha, 0.15) == Job("d", 1, 3, promoted=True)
    assert asha.get_job() is None  # rung 1 holds 2 runs: floor(2/3) = 0; nothing queued
    assert not asha.done  # open: more runs may come
    assert [asha.status(r) for r in "abcdef"] == ["paused"] * 6


def test_the_highest_rung_is_served_first() -> None:
    def run(rid: str, values: list[float]) -> dict[str, Any]:
        return {"id": rid, "status": "paused", "rung": len(values) - 1, "values": values}

    state = {
        "version": 1,
        "max_epochs": 8,
        "min_epochs": 1,
        "reduction_factor": 2,
        "complete_leader": True,
        "closed": False,
        "runs": [
            run("a", [0.1, 0.1]),
            run("b", [0.2, 0.3]),
            run("c", [0.3]),
            run("d", [0.4]),
            run("e", [0.05]),
        ],
    }
    asha = AshaScheduler.from_state(state)
    assert asha.promotable(1) == ["a"] and asha.promotable(0) == ["e"]
    assert asha.get_job() == Job("a", 2, 4, promoted=True)
    assert asha.get_job() == Job("e", 1, 2, promoted=True)
    assert asha.get_job() is None


def test_a_run_in_flight_does_not_count_at_its_rung() -> None:
    asha = AshaScheduler(9, min_epochs=1, reduction_factor=2)
    asha.add_runs(["a", "b", "c"])
    first, second = asha.get_job(), asha.get_job()
    assert first is not None and second is not None
    asha.report(first.run_id, 0.1)
    assert asha.promotable(0) == []  # one report: floor(1/2) = 0, though b is running
    asha.report(second.run_id, 0.2)
    assert asha.promotable(0) == ["a"]


def test_eta_one_is_one_full_run_each() -> None:
    asha = AshaScheduler(10, min_epochs=1, reduction_factor=1)
    ids = [f"r{i}" for i in range(7)]
    asha.add_runs(ids)
    asha.close()
    trained = dict.fromkeys(ids, 0)
    while (job := asha.get_job()) is not None:
        trained[job.run_id] = job.epochs
        asha.report(job.run_id, 1.0 / (1 + len(job.run_id) + job.epochs))
    assert asha.done
    assert trained == dict.fromkeys(ids, 10)
    assert all(asha.status(r) == "completed" for r in ids)
    assert asha.finish() == []


def test_one_rung_at_the_budget_is_one_full_run_each() -> None:
    asha = AshaScheduler(5, min_epochs=5, reduction_factor=3)
    asha.add_runs(["a", "b"])
    assert [_run(asha, v) for v in (0.2, 0.1)] == [Job("a", 0, 5, False), Job("b", 0, 5, False)]
    assert asha.status("a") == asha.status("b") == "completed"


def _finite_pool(complete_leader: bool) -> AshaScheduler:
    asha = AshaScheduler(9, min_epochs=1, reduction_factor=3, complete_leader=complete_leader)
    asha.add_runs(["a", "b", "c", "d"])
    asha.close()
    values = {"a": [0.3, 0.2, 0.1], "b": [0.5], "c": [0.1, 0.05, 0.01], "d": [0.8]}
    while (job := asha.get_job()) is not None:
        asha.report(job.run_id, values[job.run_id][job.rung])
    return asha


def test_with_a_finite_pool_the_leader_completes_its_budget() -> None:
    asha = _finite_pool(complete_leader=True)
    # 4 runs: c promoted to rung 1 (alone there: floor(1/3) = 0); the switch takes it to rung 2
    assert asha.done
    assert asha.values("c") == [0.1, 0.05, 0.01] and asha.status("c") == "completed"
    assert asha.ranking()[0] == "c" and asha.epochs_of("c") == 9
    assert asha.finish() == ["a", "b", "d"]
    assert {asha.status(r) for r in "abd"} == {"stopped"}


def test_the_papers_rule_alone_may_leave_no_run_at_the_top() -> None:
    asha = _finite_pool(complete_leader=False)
    assert asha.done and asha.values("c") == [0.1, 0.05]
    assert asha.ranking() == ["c", "a", "b", "d"]  # highest rung first, then value
    assert asha.finish() == ["a", "b", "c", "d"]


def test_a_diverged_run_ranks_last_and_the_state_stays_json() -> None:
    asha = AshaScheduler(9, min_epochs=1, reduction_factor=2)
    asha.add_runs(["a", "b"])
    _run(asha, math.nan)
    _run(asha, 2.0)
    assert asha.values("a") == [None]
    assert asha.promotable(0) == ["b"]
    json.dumps(asha.state_dict(), allow_nan=False)


def test_the_state_round_trips_mid_search_and_both_copies_continue_alike() -> None:
    asha = AshaScheduler(27, min_epochs=1, reduction_factor=3)
    asha.add_runs([f"r{i}" for i in range(9)])
    for v in (0.5, 0.2, 0.9, 0.4, 0.1):
        _run(asha, v)
    out = asha.get_job()  # a job left running in the stored state
    assert out is not None
    state = json.loads(json.dumps(asha.state_dict(), allow_nan=False))
    copy = AshaScheduler.from_state(state)
    assert copy.state_dict() == asha.state_dict()
    for sched in (asha, copy):
        sched.report(out.run_id, 0.3)
    for i in range(6):
        assert asha.get_job() == copy.get_job()
        for sched in (asha, copy):
            if sched.status(f"r{i}") == "running":
                sched.report(f"r{i}", 0.1 * i)
    assert copy.state_dict() == asha.state_dict()


def test_misuse_is_refused() -> None:
    asha = AshaScheduler(9)
    asha.add_runs(["a"])
    with pytest.raises(ValueError, match="already in the scheduler"):
        asha.add_runs(["a"])
    with pytest.raises(ValueError, match="has no job out"):
        asha.report("a", 0.1)
    asha.close()
    with pytest.raises(RuntimeError, match="closed"):
        asha.add_runs(["b"])
    with pytest.raises(ValueError, match="unknown ASHA state version"):
        AshaScheduler.from_state({**asha.state_dict(), "version": 99})


def _records(losses: list[float], accs: list[float]) -> list[dict[str, Any]]:
    return [{"steps": 10, "val_loss": v, "val_accuracy": a} for v, a in zip(losses, accs, strict=True)]


def test_rung_value_by_validation_loss_is_the_best_epoch_so_far() -> None:
    curves = _records([1.0, 0.6, 0.7, 0.5], [0.5, 0.7, 0.6, 0.8])
    assert rung_value(curves, 3, "classification", key="val-loss") == 0.6
    assert rung_value(curves, 9, "classification", key="val-loss") == 0.5  # stopped before: its end
    assert rung_value(_records([math.nan], [0.1]), 1, "classification", key="val-loss") == math.inf


def test_rung_value_by_extrapolation_is_minus_the_estimated_accuracy() -> None:
    accs = [0.5, 0.7, 0.8, 0.85, 0.875, 0.8875]
    curves = _records([1.0] * 6, accs)
    value = rung_value(curves, 6, "classification", max_epochs=20)  # the default key
    assert -1.0 <= value < -0.8875  # a saturating curve read at 20 epochs: above the best seen
    short = rung_value(curves, 2, "classification", key="extrapolated", max_epochs=20)
    assert short == -0.7  # too few points to fit: the best observed
    lm = [{"steps": 10, "val_loss": 2.0 - 0.1 * i} for i in range(3)]
    assert rung_value(lm, 3, "language_model") == pytest.approx(1.8 / math.log(2))  # bits per char
    with pytest.raises(ValueError, match="key must be one of"):
        rung_value(curves, 2, "classification", key="test-loss")


def test_start_runs_a_queued_run_at_rung_0_whatever_get_job_would_pick() -> None:
    """The service adds a run and starts it in one transaction (worker/search_asha.py)."""
    from archscreen.core.asha import AshaScheduler

    asha = AshaScheduler(9, min_epochs=1, reduction_factor=3)
    asha.add_runs(["a", "b", "c"])
    for rid in ("a", "b", "c"):
        asha.start(rid)
    for rid, v in (("a", 0.1), ("b", 0.2), ("c", 0.3)):
        asha.report(rid, v)
    asha.add_runs(["d"])
    job = asha.start("d")  # get_job would promote "a" first
    assert (job.run_id, job.rung, job.epochs, job.promoted) == ("d", 0, 1, False)
    assert asha.status("d") == "running" and asha.get_job().run_id == "a"  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="not queued"):
        asha.start("d")

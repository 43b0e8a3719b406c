"""store.ranking and the extrapolated estimate: per-candidate aggregation over seeds, ranking by it
(direction by task, ties by overlapping intervals) and old results without one.

Hand-made records (no database): the rule is pure; tests/api/test_ranking_estimate.py runs it over
both backends through the API.
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import Any

import pytest

from archscreen.store.ranking import (
    RankRow,
    _mark_ties,
    _tied,
    estimate_of,
    metric_higher_is_better,
    rank,
)
from archscreen.store.records import CandidateBrief, JobRecord

T0 = datetime(2026, 1, 1)


def job(jid: int, cid: int, seed: int, result: dict[str, Any] | None, state: str = "succeeded") -> JobRecord:
    return JobRecord(
        id=jid,
        kind="screen",
        study_id=1,
        candidate_id=cid,
        seed=seed,
        state=state,  # type: ignore[arg-type]
        attempts=1,
        max_attempts=2,
        cancel_requested=False,
        error=None,
        config={},
        result=result,
        epoch=3,
        max_epochs=3,
        elapsed_s=1.0,
        created_at=T0,
        started_at=T0,
        finished_at=T0,
    )


def res(
    task: str, val_loss: float, est: tuple[float, float, float] | None, method: str = "exp-saturation"
) -> dict:
    out: dict[str, Any] = {"task": task, "val_loss": val_loss, "val_accuracy": 0.5}
    if est is not None:
        out["estimate"] = {"value": est[0], "low": est[1], "high": est[2], "method": method}
    return out


def brief(cid: int) -> CandidateBrief:
    return CandidateBrief(id=cid, study_id=1, name=f"c{cid}", num_params=1)


def test_estimate_is_the_mean_over_succeeded_seeds_with_mean_bounds() -> None:
    runs = [
        job(1, 1, 0, res("classification", 0.5, (0.90, 0.88, 0.93))),
        job(2, 1, 1, res("classification", 0.5, (0.94, 0.90, 0.95), method="power-law")),
        job(3, 1, 2, res("classification", 0.5, (0.10, 0.0, 0.2)), state="failed"),  # not a succeeded seed
    ]
    est = estimate_of(runs)
    assert est is not None
    assert est["value"] == pytest.approx(0.92) and est["low"] == pytest.approx(0.89)
    assert est["high"] == pytest.approx(0.94) and est["seeds"] == 2
    assert est["method"] == "exp-saturation, power-law" and est["metric"] == "val_accuracy"


def test_an_accuracy_interval_is_clipped_at_zero_and_a_loss_interval_is_not() -> None:
    short = [  # a short noisy curve: core's interval reaches far below any accuracy
        job(1, 1, 0, res("classification", 0.5, (0.30, -5.7, 0.33))),
        job(2, 1, 1, res("classification", 0.5, (0.28, 0.20, 0.31))),
    ]
    est = estimate_of(short)
    assert est is not None and est["low"] == pytest.approx(0.10) and est["value"] == pytest.approx(0.29)
    bpc = estimate_of([job(3, 2, 0, res("language_model", 2.0, (2.5, -0.5, 3.0)))])
    assert bpc is not None and bpc["low"] == pytest.approx(-0.5) and bpc["metric"] == "val_bpc"


def test_old_results_without_an_estimate_give_none_and_are_not_ranked_by_it() -> None:
    old = [job(1, 1, 0, res("classification", 0.4, None))]
    broken = [job(2, 2, 0, {**res("classification", 0.6, None), "estimate": {"value": float("nan")}})]
    new = [job(3, 3, 0, res("classification", 0.9, (0.8, 0.7, 0.85)))]
    assert estimate_of(old) is None and estimate_of(broken) is None
    ranked, unranked = rank([brief(1), brief(2), brief(3)], [*old, *broken, *new], "estimate")
    assert [r.candidate_id for r in ranked] == [3] and ranked[0].score == pytest.approx(0.8)
    assert {r.candidate_id: r.estimate for r in unranked} == {1: None, 2: None}
    assert {r.state for r in unranked} == {"succeeded"}
    # the default metric still ranks all three, each row with its estimate (or None)
    by_loss, _ = rank([brief(1), brief(2), brief(3)], [*old, *broken, *new])
    assert [r.candidate_id for r in by_loss] == [1, 2, 3]
    assert [r.estimate is not None for r in by_loss] == [False, False, True]


@pytest.mark.parametrize(
    ("task", "higher", "order"),
    [
        ("classification", True, [2, 1, 3]),
        ("language_model", False, [3, 1, 2]),
        ("regression", False, [3, 1, 2]),
    ],
)
def test_ranking_by_estimate_follows_the_task_direction_and_ties_overlapping_intervals(
    task: str, higher: bool, order: list[int]
) -> None:
    ests = {1: (1.5, 1.4, 1.65), 2: (2.0, 1.6, 2.2), 3: (1.0, 0.95, 1.05)}  # 1 and 2 overlap; 3 apart
    jobs = [job(c, c, 0, res(task, 0.5, e)) for c, e in ests.items()]
    ranked, _ = rank([brief(c) for c in ests], jobs, "estimate")
    assert metric_higher_is_better("estimate", jobs) is higher
    assert [r.candidate_id for r in ranked] == order
    ties = {r.candidate_id: r.tied_with for r in ranked}
    assert ties[1] == [2] and ties[2] == [1] and ties[3] == []
    assert (
        ranked[0].estimate is not None
        and ranked[0].estimate["metric"]
        == {
            "classification": "val_accuracy",
            "language_model": "val_bpc",
            "regression": "val_mse",
        }[task]
    )


def test_metric_is_checked_against_the_vocabulary() -> None:
    with pytest.raises(ValueError, match=r"unknown metric 'val_bpc'; choose from .*estimate"):
        rank([], [], "val_bpc")


@pytest.mark.parametrize("seed", range(3))
def test_the_tie_sweep_by_estimate_finds_exactly_the_pairs_the_rule_ties(seed: int) -> None:
    rng = random.Random(seed)
    rows = []
    for i in range(60):
        value = round(rng.uniform(0, 6), rng.choice([1, 2, 6]))  # rounded: equal values happen
        low = value - rng.choice([0.0, rng.uniform(0, 0.05), rng.uniform(0, 0.3)])
        high = value + rng.choice([0.0, rng.uniform(0, 0.05), rng.uniform(0, 0.3)])
        est = {"value": value, "low": low, "high": high, "method": "x"}
        rows.append(RankRow(candidate_id=i, name=str(i), state="succeeded", score=value, estimate=est))
    rows.sort(key=lambda r: (r.score or 0.0, r.candidate_id))
    for k, r in enumerate(rows):
        r.rank = k + 1
    _mark_ties(rows, by_estimate=True)
    for a in rows:
        assert a.tied_with == [b.candidate_id for b in rows if b is not a and _tied(a, b, True)]
    assert any(r.tied_with for r in rows) and any(not r.tied_with for r in rows)  # the test discriminates

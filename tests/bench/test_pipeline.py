"""The end-to-end pipeline benchmark's scoring (``bench/pipeline.py``): the answer and its regrets."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import pipeline  # noqa: E402


def _tuned(
    arch: str, job_id: int, val_loss: float, acc: float, state: str = "succeeded", start: str = "p50"
) -> dict[str, Any]:
    return {
        "arch": arch,
        "job_id": job_id,
        "start": start,
        "state": state,
        "error": None,
        "result": {"val_loss": val_loss, "test_accuracy": acc, "steps": 100, "tuner": "fd2-adam"},
    }


def _study(dataset: str = "digits") -> dict[str, Any]:
    return {
        "dataset": dataset,
        "k_max": 3,
        "ranking": ["b", "a", "c"],
        "screening": {a: {"steps": 50} for a in "abc"},
        "tuning": [
            _tuned("b", 1, val_loss=0.30, acc=0.90),
            _tuned("a", 2, val_loss=0.20, acc=0.93),
            _tuned("a", 4, val_loss=0.25, acc=0.97, start="p25"),  # worse validation, better test
            _tuned("b", 5, val_loss=0.15, acc=0.91, start="p75"),  # b's best start
            _tuned("c", 3, val_loss=0.10, acc=0.99, state="failed"),
        ],
    }


TRUTH = {
    "test": {"a": 95.0, "b": 92.0, "c": 96.0},
    "adam_grid_steps_one_seed": 1000.0,
    "both_grids_steps_one_seed": 2000.0,
}


def test_the_answer_is_the_best_tuned_validation_among_the_top_k() -> None:
    study = _study()
    # the best validation loss over the candidate's starts
    assert pipeline.pick(study, 1)["job_id"] == 5
    assert pipeline.pick(study, 1, median_start_only=True)["job_id"] == 1
    # the best of the top two across every start; a failed job is never the answer
    assert pipeline.pick(study, 2)["job_id"] == 5
    assert pipeline.pick(study, 3)["job_id"] == 5
    assert pipeline.pick(study, 3, median_start_only=True)["job_id"] == 2


def test_regrets_are_against_the_best_of_both_truth() -> None:
    rows = {r["k"]: r for r in pipeline.analyse(_study(), TRUTH, {2: {"test_accuracy": 0.955, "steps": 1}})}
    assert rows[1]["picked"] == "b" and rows[1]["best_arch"] == "c" and rows[1]["start"] == "p75"
    assert rows[1]["selection_regret"] == pytest.approx(96.0 - 92.0)
    assert rows[1]["delivered_regret_weights"] == pytest.approx(96.0 - 91.0)
    assert rows[1]["delivered_regret_median_start"] == pytest.approx(96.0 - 90.0)
    assert rows[1]["delivered_regret_retrained"] is None  # job 5 was not retrained
    assert rows[3]["selection_regret"] == pytest.approx(96.0 - 92.0)
    assert rows[3]["delivered_regret_median_start"] == pytest.approx(96.0 - 93.0)
    assert pipeline.analyse(_study(), TRUTH, {5: {"test_accuracy": 0.955}})[0][
        "delivered_regret_retrained"
    ] == pytest.approx(96.0 - 95.5)
    # compute: every screening run plus the top-k's tuning runs (every start), over one grid
    assert rows[1]["compute_vs_adam_grid"] == pytest.approx((150 + 200) / 1000)
    assert rows[2]["compute_vs_adam_grid"] == pytest.approx((150 + 400) / 1000)
    assert rows[3]["compute_vs_both_grids"] == pytest.approx((150 + 500) / 2000)


def test_bits_per_character_regret_is_lower_is_better() -> None:
    study = _study("chartext")
    for t in study["tuning"]:
        t["result"]["test_bpc"] = {1: 2.0, 2: 1.9, 4: 1.7, 3: 1.0, 5: 2.05}[t["job_id"]]
    truth = {**TRUTH, "test": {"a": 1.8, "b": 2.1, "c": 1.6}}
    rows = {r["k"]: r for r in pipeline.analyse(study, truth, {})}
    assert rows[1]["best_arch"] == "c"
    assert rows[1]["selection_regret"] == pytest.approx(2.1 - 1.6)
    assert rows[1]["delivered_regret_weights"] == pytest.approx(2.05 - 1.6)
    assert rows[1]["delivered_regret_median_start"] == pytest.approx(2.0 - 1.6)


def test_the_study_budget_is_the_fidelity_budget_with_doubled_patience() -> None:
    cfg = pipeline.study_config("digits", seeds=1)
    b = pipeline.BUDGETS["digits"]
    assert cfg == {
        "max_epochs": b["max_epochs"],
        "patience": 2 * b["patience"],
        "batch_size": b["batch_size"],
        "seeds": [0],
    }
    assert pipeline.config_key("digits", 1, 3, 3) != pipeline.config_key("digits", 1, 2, 3)
    assert pipeline.config_key("digits", 1, 3, 3) != pipeline.config_key("digits", 1, 3, 1)

"""The budget study (``bench/fidelity_budget.py``): budgets read off one long run equal the budgets
trained on their own, the stop rules' replay, and the choice rule written in docs/fidelity.md."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import fidelity_budget as fb  # noqa: E402
from fidelity import spec_for  # noqa: E402
from fidelity_budget_report import choose  # noqa: E402
from fidelity_suites import FULL_SUITES  # noqa: E402

from archscreen.core.training.loop import TrainConfig  # noqa: E402


@pytest.mark.parametrize("kind", ["alrao", "adam"])
def test_a_budget_read_off_a_long_run_equals_it_trained_alone(kind: str) -> None:
    torch.set_num_threads(1)
    body = FULL_SUITES["digits"]["logreg"]
    rules = [fb.BudgetRule("raw", 6, 2), fb.BudgetRule("smooth", 9, 2, "plateau-nofloor")]
    long_row = fb.long_run("digits", "logreg", body, kind, 0, rules, max_steps_per_epoch=4)
    assert "error" not in long_row and long_row["stopped_because"] in ("cancelled", "max_epochs")
    for rule in rules:
        read = fb.read_budget(long_row, rule)
        assert read is not None
        stop = "patience" if rule.stop == "patience" else "plateau"
        cfg = TrainConfig(
            max_epochs=rule.max_epochs,
            patience=rule.patience,
            batch_size=32,
            seed=0,
            stop_rule=stop,
            plateau_min_steps=0,
            plateau_min_epochs=0,
            max_steps_per_epoch=4,
        )
        alone = fb.KINDS[kind]().screen(spec_for("logreg", body, "digits"), "digits", cfg)
        assert (read["epochs"], read["steps"], read["best_epoch"]) == (
            alone.epochs,
            alone.steps,
            alone.best_epoch,
        )
        assert read["val_loss"] == alone.val_loss
        assert read["test"] == pytest.approx(100 * alone.test_accuracy)
        assert read["preferred_lr"] == alone.preferred_lr
        assert alone.estimate is not None
        assert fb.product_estimate(read) == pytest.approx(alone.estimate["value"])
        assert read["cpu_seconds"] > 0


def test_stop_rules_replay_the_loop() -> None:
    flat = [1.0, 0.9, 0.95, 0.96, 0.97, 0.98]
    train = [1.0] * len(flat)
    steps = [100 * (i + 1) for i in range(len(flat))]
    assert fb.stop_epoch(flat, train, steps, fb.BudgetRule("r", 10, 3)) == 5  # 3 epochs without a new best
    assert fb.stop_epoch(flat, train, steps, fb.BudgetRule("r", 4, 10)) == 4  # the cap
    assert fb.stop_epoch(flat, train, steps, fb.BudgetRule("r", 10, 10)) is None  # curve too short
    # the floor (1,000 steps) holds the smoothed rule back where the rule without it stops
    assert fb.stop_epoch(flat, train, steps, fb.BudgetRule("r", 10, 2, "plateau")) is None
    assert fb.stop_epoch(flat, train, steps, fb.BudgetRule("r", 10, 2, "plateau-nofloor")) is not None
    assert fb.stop_epoch([1.0, math.nan], [1.0, 1.0], [1, 2], fb.BudgetRule("r", 10, 5)) == 2  # diverged


def test_choice_is_the_cheapest_budget_within_noise_of_the_best() -> None:
    table = {
        "best": {"E": 5.0, "E_seeds": [4.0, 6.0], "S": 0.90, "C": 100.0, "steps": 10},
        "cheap-close": {"E": 5.8, "E_seeds": [5.8, 5.8], "S": 0.88, "C": 50.0, "steps": 5},
        "cheap-far": {"E": 6.5, "E_seeds": [6.5, 6.5], "S": 0.91, "C": 10.0, "steps": 1},
        "cheap-bad-rank": {"E": 5.0, "E_seeds": [5.0, 5.0], "S": 0.80, "C": 20.0, "steps": 2},
    }
    chosen, why = choose(table)
    assert (chosen, why["best_E"], why["noise"]) == ("cheap-close", "best", 1.0)
    assert set(why["eligible"]) == {"best", "cheap-close"}


def test_every_dataset_gets_the_factorial_today_and_the_step_budgets() -> None:
    rules = fb.rules_for("digits", 1077)
    names = [r.name for r in rules]
    assert len(rules) == 1 + 27 + 2 and names[0] == "today" and len(set(names)) == len(names)
    assert {r.max_epochs for r in rules if r.name.startswith("cap")} == {60, 120, 180}
    steps = {r.name: r for r in rules if r.name.startswith("steps")}
    assert (steps["steps-2k"].max_epochs, steps["steps-2k"].patience) == (59, 15)

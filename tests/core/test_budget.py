"""core/budget.py: a budget in optimizer steps scaled to the dataset, as an epoch cap and patience."""

from __future__ import annotations

import pytest

from archscreen.core.budget import EpochBudget, StepBudget, epoch_budget

BUDGET = StepBudget(min_epochs=10, min_steps=2000, patience_epochs=5, patience_steps=500)


def test_small_datasets_get_enough_steps_large_ones_enough_passes() -> None:
    # digits: 1,077 rows at batch 32 are 34 steps an epoch: 2,000 steps need 59 epochs
    assert epoch_budget(1077, 32, BUDGET) == EpochBudget(max_epochs=59, patience=15)
    # 100,000 rows: 3,125 steps an epoch, so the floor of 10 passes (and 5 epochs' patience) binds
    assert epoch_budget(100_000, 32, BUDGET) == EpochBudget(max_epochs=10, patience=5)
    # an exact multiple does not round up
    assert epoch_budget(3200, 32, StepBudget(1, 1000, 1, 0)) == EpochBudget(max_epochs=10, patience=1)


def test_patience_never_exceeds_the_cap() -> None:
    assert epoch_budget(64, 32, StepBudget(1, 4, 1, 100)) == EpochBudget(max_epochs=2, patience=2)


@pytest.mark.parametrize(
    ("args", "message"),
    [((0, 32, BUDGET), "train_size"), ((100, 0, BUDGET), "batch_size")],
)
def test_bad_sizes_are_refused(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        epoch_budget(*args)


def test_bad_budgets_are_refused() -> None:
    with pytest.raises(ValueError, match="min_epochs"):
        StepBudget(0, 10, 1, 1)
    with pytest.raises(ValueError, match="min_steps"):
        StepBudget(1, -1, 1, 1)

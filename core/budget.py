"""A training budget in optimizer steps scaled to the dataset, mapped to an epoch cap and patience.

An epoch is very different compute on a 1,000-row and a 100,000-row dataset: 30 epochs are 1,000
steps of a 1,000-row set at batch 32 and 94,000 of a 100,000-row one. :class:`StepBudget` states
a budget as a minimum number of passes *and* a minimum number of optimizer steps (and the same
for patience); :func:`epoch_budget` turns it into the epoch cap and patience that
``TrainConfig`` takes, so the training loop does not change. Small datasets get more epochs
(enough steps to learn), large ones at least ``min_epochs`` passes.

Measured as a dimension of fidelity study II's held-out protocol (``bench/fidelity_budget.py``,
``docs/fidelity.md``, "The budget as a dimension").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["EpochBudget", "StepBudget", "epoch_budget"]


@dataclass(frozen=True)
class StepBudget:
    """A budget that scales with the dataset.

    Args:
        min_epochs: the cap is at least this many passes over the training set.
        min_steps: ... and at least this many optimizer steps.
        patience_epochs: patience is at least this many epochs ...
        patience_steps: ... and at least this many steps' worth of epochs (never above the cap).
    """

    min_epochs: int
    min_steps: int
    patience_epochs: int
    patience_steps: int

    def __post_init__(self) -> None:
        if self.min_epochs < 1 or self.patience_epochs < 1:
            raise ValueError("min_epochs and patience_epochs must be >= 1")
        if self.min_steps < 0 or self.patience_steps < 0:
            raise ValueError("min_steps and patience_steps must be >= 0")


@dataclass(frozen=True)
class EpochBudget:
    """What ``TrainConfig`` takes: ``max_epochs`` and ``patience``."""

    max_epochs: int
    patience: int


def epoch_budget(train_size: int, batch_size: int, budget: StepBudget) -> EpochBudget:
    """The epoch cap and patience of ``budget`` on a training set of ``train_size`` rows.

    Steps per epoch are ``ceil(train_size / batch_size)``, as the training loop counts them.
    """
    if train_size < 1 or batch_size < 1:
        raise ValueError(f"train_size and batch_size must be >= 1, got {train_size}, {batch_size}")
    steps_per_epoch = math.ceil(train_size / batch_size)
    cap = max(budget.min_epochs, math.ceil(budget.min_steps / steps_per_epoch))
    patience = max(budget.patience_epochs, math.ceil(budget.patience_steps / steps_per_epoch))
    return EpochBudget(max_epochs=cap, patience=min(patience, cap))

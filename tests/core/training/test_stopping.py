"""Stop rules as strategy objects (``core/training/stopping.py``): which fire, in which order."""

from __future__ import annotations

import math

import torch
from torch import nn

from archscreen.core.training.loop import TrainConfig
from archscreen.core.training.state import EpochRecord, LoopState
from archscreen.core.training.stopping import (
    Diverged,
    EpochCap,
    Patience,
    Plateau,
    WallClock,
    first_fired,
    stop_rules,
)


def _state(**kw: float) -> LoopState:
    model = nn.Linear(1, 1)
    return LoopState(model, torch.optim.SGD(model.parameters(), lr=0.1), torch.Generator(), **kw)


def test_the_config_picks_the_rules_in_tie_order() -> None:
    assert stop_rules(TrainConfig(max_epochs=7, patience=3)) == (Diverged(), Patience(3), EpochCap(7))
    plateau = TrainConfig(
        max_epochs=7,
        patience=2,
        stop_rule="plateau",
        plateau_min_steps=9,
        plateau_min_epochs=4,
        wall_clock_s=5.0,
    )
    assert stop_rules(plateau) == (Diverged(), Plateau(2, 9, 4), WallClock(5.0), EpochCap(7))


def test_divergence_wins_a_tie_with_the_cap() -> None:
    state = _state(epoch=3, bad_epochs=5)
    state.curves.append(EpochRecord(3, math.nan, 1.0, None, 0.0, 1))
    assert first_fired(stop_rules(TrainConfig(max_epochs=3, patience=5)), state) == "diverged"


def test_plateau_needs_its_floor_of_steps_and_epochs() -> None:
    rule = Plateau(patience=2, min_steps=100, min_epochs=5)
    assert not rule.fires(_state(ema_bad=2, total_steps=99, epoch=5))
    assert not rule.fires(_state(ema_bad=2, total_steps=100, epoch=4))
    assert not rule.fires(_state(ema_bad=1, total_steps=100, epoch=5))
    assert rule.fires(_state(ema_bad=2, total_steps=100, epoch=5))

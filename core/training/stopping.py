"""Stop rules of the training loop: small strategy objects, checked in order after each epoch.

Each rule reads the run's :class:`~archscreen.core.training.state.LoopState` (its curve
statistics, steps and time) and says whether it fires; the first rule that fires names the stop
(``TrainResult.stopped_because``). :func:`stop_rules` builds the list from a ``TrainConfig``, in
the order that decides between rules firing at the same epoch: divergence, then the configured
``stop_rule`` (patience or plateau), then the time budget, then the epoch cap.

A new rule is one class here and its place in :func:`stop_rules`; a statistic it needs that the
state does not keep yet is one more :class:`LoopState` field (the checkpoint carries it on its
own). Cancellation is not a rule: a callback or step hook raises ``TrainingCancelled``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from archscreen.core.training.state import LoopState, StopReason

if TYPE_CHECKING:
    from archscreen.core.training.loop import TrainConfig


class StopCondition(abc.ABC):
    """One stop rule: ``fires(state)`` after each finished epoch; ``reason`` names the stop."""

    reason: ClassVar[StopReason]

    @abc.abstractmethod
    def fires(self, state: LoopState) -> bool:
        """Whether the run stops after the epoch ``state`` has just accounted."""


@dataclass(frozen=True)
class Diverged(StopCondition):
    """A non-finite training or validation loss in the last epoch."""

    reason: ClassVar[StopReason] = "diverged"

    def fires(self, state: LoopState) -> bool:
        return state.diverged


@dataclass(frozen=True)
class Patience(StopCondition):
    """``patience`` epochs in a row without a lower raw validation loss."""

    patience: int
    reason: ClassVar[StopReason] = "patience"

    def fires(self, state: LoopState) -> bool:
        return state.bad_epochs >= self.patience


@dataclass(frozen=True)
class Plateau(StopCondition):
    """The curve-aware budget: ``patience`` epochs in which the smoothed validation loss failed to
    improve by its relative tolerance, once the run has taken ``min_steps`` optimizer steps and
    ``min_epochs`` epochs (the floor; see ``TrainConfig.stop_rule``)."""

    patience: int
    min_steps: int
    min_epochs: int
    reason: ClassVar[StopReason] = "plateau"

    def fires(self, state: LoopState) -> bool:
        return (
            state.ema_bad >= self.patience
            and state.total_steps >= self.min_steps
            and state.epoch >= self.min_epochs
        )


@dataclass(frozen=True)
class WallClock(StopCondition):
    """The time budget, in seconds of training over all resumes, checked after each epoch."""

    budget_s: float
    reason: ClassVar[StopReason] = "wall_clock"

    def fires(self, state: LoopState) -> bool:
        return state.elapsed >= self.budget_s


@dataclass(frozen=True)
class EpochCap(StopCondition):
    """The last allowed epoch is done."""

    max_epochs: int
    reason: ClassVar[StopReason] = "max_epochs"

    def fires(self, state: LoopState) -> bool:
        return state.epoch >= self.max_epochs


def stop_rules(config: TrainConfig) -> tuple[StopCondition, ...]:
    """The rules ``config`` asks for, in the order that decides a tie."""
    rules: list[StopCondition] = [Diverged()]
    if config.stop_rule == "patience":
        rules.append(Patience(config.patience))
    else:
        rules.append(Plateau(config.patience, config.plateau_min_steps, config.plateau_min_epochs))
    if config.wall_clock_s is not None:
        rules.append(WallClock(config.wall_clock_s))
    rules.append(EpochCap(config.max_epochs))
    return tuple(rules)


def first_fired(rules: tuple[StopCondition, ...], state: LoopState) -> StopReason | None:
    """The reason of the first rule that fires, or None: the run goes on."""
    return next((rule.reason for rule in rules if rule.fires(state)), None)

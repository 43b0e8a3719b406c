"""The rate trajectory of a tuning run and the rules that read a recommended rate off it.

The trajectory is optimizer state (it must resume from a checkpoint with the run), so its data
stays a plain ``dict`` under ``optimizer.state[TRAJECTORY_KEY]``: checkpoints hold only plain
data and tensors, and checkpoints written before this class existed load unchanged.
:class:`Trajectory` is the typed view over that dict that every tuner records through.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, cast

from torch.optim import Optimizer

__all__ = ["TRAJECTORY_KEY", "RecommendRule", "Trajectory", "converged"]

TRAJECTORY_KEY = "archscreen.trajectory"
RecommendRule = Literal["tail", "mean", "best"]


class Trajectory:
    r"""The rate in effect after each step, thinned to at most ``max_points`` points.

    Points are ``[step, lr]`` (step 0 is the initial rate); when the list outgrows
    ``max_points`` every other point is dropped and the stride doubles, so a long run keeps an
    evenly spaced trace. The exact sum of the rates (overall and at each epoch's end) is kept
    beside the thinned points, so the ``"mean"`` and ``"best"`` rules are exact.
    """

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    @classmethod
    def new(cls, max_points: int, init_lr: float | None = None) -> Trajectory:
        t = cls({"points": [], "stride": 1, "max_points": max_points, "step": 0, "lr_sum": 0.0})
        if init_lr is not None:
            t.data["points"].append([0, init_lr])
        return t

    @classmethod
    def of(cls, optimizer: Optimizer, max_points: int, init_lr: Callable[[], float]) -> Trajectory:
        """The trajectory kept in ``optimizer.state`` (created at ``init_lr()`` on first use).

        Looked up on every step, not cached: a checkpoint load replaces the optimizer's state.
        """
        state = cast(dict[Any, Any], optimizer.state)
        data = state.get(TRAJECTORY_KEY)
        if data is None:
            data = cls.new(max_points, init_lr()).data
            state[TRAJECTORY_KEY] = data
        return cls(data)

    @property
    def points(self) -> list[list[float]]:
        return cast(list[list[float]], self.data["points"])

    @property
    def steps(self) -> int:
        return int(self.data["step"])

    @property
    def steps_per_epoch(self) -> int | None:
        value = self.data.get("steps_per_epoch")
        return int(value) if value else None

    @steps_per_epoch.setter
    def steps_per_epoch(self, value: int) -> None:
        self.data["steps_per_epoch"] = value

    @property
    def epoch_sums(self) -> list[float]:
        """The running sum of the rates at the end of each completed epoch."""
        return cast(list[float], self.data.get("epoch_sums", []))

    def record(self, lr: float) -> None:
        """Record the rate in effect after one more step (point 0 is the initial rate)."""
        d = self.data
        d["step"] += 1
        d["lr_sum"] = d.get("lr_sum", 0.0) + lr
        step = d["step"]
        per_epoch = d.get("steps_per_epoch")
        if per_epoch and step % per_epoch == 0:
            d.setdefault("epoch_sums", []).append(d["lr_sum"])
        if step % d["stride"] == 0:
            d["points"].append([step, lr])
            if len(d["points"]) > d["max_points"]:
                d["points"] = d["points"][::2]
                d["stride"] *= 2

    def run_mean(self) -> float:
        """The arithmetic mean of the rate over every step of the run (exact, not thinned)."""
        steps = self.steps
        if steps == 0 or "lr_sum" not in self.data:  # a checkpoint from before the sum was kept
            rates = [lr for _, lr in self.points]
            return sum(rates) / len(rates) if rates else float("nan")
        return float(self.data["lr_sum"]) / steps

    def recommended(self, rule: str, best_epoch: int = 0) -> float:
        """The rate read off the run by ``rule`` (see :attr:`archscreen.core.tuning.Tuner.recommend`)."""
        sums, per_epoch = self.epoch_sums, self.steps_per_epoch
        if rule == "best" and per_epoch and 1 <= best_epoch <= len(sums):
            # the mean rate over the steps that led to the best epoch's weights
            upto = float(sums[best_epoch - 1]) / (best_epoch * per_epoch)
            if upto > 0 and math.isfinite(upto):
                return upto
        mean = self.run_mean()
        if rule in ("mean", "best"):
            return mean if mean > 0 and math.isfinite(mean) else converged(self.points, self.steps)
        return converged(self.points, self.steps)


def converged(points: list[list[float]], steps: int) -> float:
    """The geometric mean of the rates over the last quarter of the steps (the paper's reading)."""
    tail = [lr for s, lr in points if s >= 0.75 * steps and lr > 0 and math.isfinite(lr)]
    if not tail:
        tail = [lr for _, lr in points[-1:] if lr > 0 and math.isfinite(lr)]
    if not tail:
        return float("nan")
    return math.exp(sum(math.log(v) for v in tail) / len(tail))

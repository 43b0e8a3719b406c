"""The :class:`Tuner` base and :class:`TuningResult`: one training run with an online rate tuner.

A tuner is a rate-adapting optimizer (:mod:`archscreen.core.tuners`) plus the glue that turns
one run into a recommended rate: the trajectory it records every step
(:class:`~archscreen.core.tuners.trajectory.Trajectory`) and the rule that reads the rate off it.
The run itself (parse, validate, seed, build, train) is the harness the screeners use
(:func:`archscreen.core.runs.start_run`). Implementations: :mod:`.fd_tuners` and
:mod:`.alera_tuners`; the registry is :mod:`archscreen.core.tuning`.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor, nn
from torch.optim import Optimizer

from archscreen.core.data import DatasetSplits
from archscreen.core.runs import RUN_FIELDS, RunResult, SpecLike, plain_model, start_run
from archscreen.core.spec import ArchSpec
from archscreen.core.training.loop import Callback, Progress, StepHook, TrainConfig, steps_per_epoch
from archscreen.core.training.model import ScreenModel

from .page_hinkley import PageHinkley
from .trajectory import Trajectory

__all__ = ["Tuner", "TuningResult"]


@dataclass(frozen=True, kw_only=True)
class TuningResult(RunResult):
    """One tuning run: recommended rate, its trajectory, curves and best-epoch metrics.

    The shared fields (spec, dataset, best-epoch metrics, curves) are :class:`RunResult`'s.
    ``trajectory`` is ``[[step, lr], ...]`` (the rate in effect after ``step`` steps; step 0 is
    ``init_lr``) thinned to at most ``max_points`` (strides double as
    the run grows); ``recommended_lr`` is read off the run by the rule ``recommended_by``
    (``Tuner.recommend``: ``"tail"``, the geometric mean over the last quarter of the steps, the
    "converged" rate; ``"mean"``; ``"best"``, the mean up to the best epoch). ``events`` counts
    guard activity (Page-Hinkley triggers, fd2 guard hits).
    """

    SERIAL_ORDER: ClassVar[tuple[str, ...]] = (
        "tuner",
        *RUN_FIELDS[:5],  # spec_name, spec_hash, dataset, task, seed
        "init_lr",
        "recommended_lr",
        "final_lr",
        "trajectory",
        *RUN_FIELDS[5:],  # the best-epoch metrics
        "paper_exact",
        "base_optimizer",
        "recommended_by",
        "events",
        "curves",
    )

    tuner: str
    init_lr: float
    recommended_lr: float
    final_lr: float
    trajectory: list[list[float]]
    paper_exact: bool
    base_optimizer: str = "sgd"
    recommended_by: str = "tail"
    events: dict[str, int] = field(default_factory=dict)


class Tuner(abc.ABC):
    """Train a spec once with an online learning-rate tuner and report the converged rate.

    Contract (:class:`archscreen.testing.TunerContract`): deterministic given the seed on one
    device; the rate stays finite and > 0; the trajectory starts at ``init_lr``; ``SpecError``
    before any training for a spec that does not fit; a callback raising ``TrainingCancelled``
    ends the run with ``stopped_because == "cancelled"``; a checkpointed run resumes identically.
    """

    name: str = "tuner"
    base_optimizer: str = "sgd"
    max_points: int = 256
    recommend: str = "tail"
    r"""How the run's rates become ``recommended_lr``: ``"tail"``, the geometric mean over the last
    quarter of the steps (the converged rate); ``"mean"``, the arithmetic mean over every step
    (the constant rate that covers the same total step size :math:`\sum_t \eta_t`); ``"best"``, the
    arithmetic mean over the steps up to the end of the best validation epoch (the rates that
    produced the reported weights; the whole run's mean when no epoch improved)."""

    def __init__(self, paper_exact: bool = False) -> None:
        self.paper_exact = paper_exact

    @abc.abstractmethod
    def build_optimizer(self, model: nn.Module, init_lr: float) -> Optimizer:
        """The optimizer (possibly wrapped) over ``model.parameters()`` starting at ``init_lr``."""

    def current_lr(self, optimizer: Optimizer) -> float:
        """The single rate this tuner recommends at this point of the run."""
        return float(optimizer.param_groups[0]["lr"])

    def default_init_lr(self) -> float:
        return 0.01

    def events(self, optimizer: Optimizer) -> dict[str, int]:
        return {}

    def make_step(self, optimizer: Optimizer, data: DatasetSplits, config: TrainConfig) -> Callable[..., Any]:
        """The training step (default: forward, backward, ``optimizer.step()``), recording the rate."""
        self.trajectory(optimizer)
        guard = optimizer if isinstance(optimizer, PageHinkley) else None

        def step(model: nn.Module, opt: Optimizer, xb: Tensor, yb: Tensor) -> Any:
            opt.zero_grad(set_to_none=True)
            out = model(xb, yb)
            out.loss.backward()
            if guard is not None:
                guard.step(loss=out.loss)
            else:
                opt.step()
            self.trajectory(opt).record(self.current_lr(opt))
            return out

        return step

    def trajectory(self, optimizer: Optimizer) -> Trajectory:
        """The run's trajectory, kept in the (innermost) optimizer's state so it checkpoints."""
        inner = optimizer.optimizer if isinstance(optimizer, PageHinkley) else optimizer
        return Trajectory.of(inner, self.max_points, lambda: self.current_lr(optimizer))

    def build_model(self, spec: ArchSpec, data: DatasetSplits) -> ScreenModel:
        return plain_model(spec, data)

    def tune(
        self,
        spec: SpecLike,
        dataset: DatasetSplits | str,
        init_lr: float | None = None,
        budget: TrainConfig | None = None,
        seed: int | None = None,
        callback: Callback | None = None,
        *,
        step_hook: StepHook | None = None,
        checkpoint_path: str | Path | None = None,
        init_state: Mapping[str, Tensor] | None = None,
    ) -> TuningResult:
        """Train ``spec`` once from ``init_lr`` (default :meth:`default_init_lr`) and read the rate
        off the run. ``init_state``: the plain model's starting weights (a state dict, loaded
        strictly after the model is built; :func:`archscreen.core.tuners.stage.plain_state_from_alrao`
        makes one from a screening), else the seed's initialisation. A checkpoint, when one
        exists, wins over both: the run resumes."""
        config = budget or TrainConfig()
        if seed is not None:
            config = replace(config, seed=seed)
        lr0 = self.default_init_lr() if init_lr is None else float(init_lr)

        def build(arch: ArchSpec, splits: DatasetSplits) -> tuple[ScreenModel, Optimizer]:
            if not (lr0 > 0 and math.isfinite(lr0)):  # after validate_spec: a bad spec is named first
                raise ValueError(f"Invalid learning rate: {init_lr}")
            model = self.build_model(arch, splits)
            if init_state is not None:
                model.load_state_dict(dict(init_state), strict=True)
            return model, self.build_optimizer(model, lr0)

        run = start_run(spec, dataset, config, build)
        optimizer = run.optimizer
        step_fn = self.make_step(optimizer, run.splits, config)
        self.trajectory(optimizer).steps_per_epoch = steps_per_epoch(len(run.splits.x_train), config)

        wrapped: Callback | None = None
        if callback is not None:
            user_cb = callback

            def wrapped(p: Progress) -> None:
                user_cb(replace(p, extra={**p.extra, "lr": self.current_lr(optimizer)}))

        result = run.train(
            callback=wrapped, step_hook=step_hook, checkpoint_path=checkpoint_path, step_fn=step_fn
        )
        traj = self.trajectory(optimizer)  # reloaded from a checkpoint if resumed
        return TuningResult(
            tuner=self.name,
            **run.result_fields(result),
            init_lr=lr0,
            recommended_lr=traj.recommended(self.recommend, result.best_epoch),
            final_lr=self.current_lr(optimizer),
            trajectory=[list(p) for p in traj.points],
            paper_exact=self.paper_exact,
            base_optimizer=self.base_optimizer,
            recommended_by=self.recommend,
            events=self.events(optimizer),
        )

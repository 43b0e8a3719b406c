"""The one run harness screeners and tuners share, and the result fields they share.

A screening (:meth:`archscreen.core.screening.Screener.screen`) and a tuning run
(:meth:`archscreen.core.tuning.Tuner.tune`) are the same run with a different model/optimizer:
parse the spec, load the dataset, validate the spec against it (a ``SpecError`` naming the field
path, before any training), seed, build on the CPU (the same initial weights and Alrao rates on
every device), move to the device, train with :func:`~archscreen.core.training.loop.train`.
:func:`start_run` does all of it but the last step; :meth:`Run.train` does that. Both results
derive from :class:`RunResult`, which holds the fields they share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch.optim import Optimizer

from archscreen.core.data import DatasetSplits, load_dataset
from archscreen.core.spec import ArchSpec, parse_spec, spec_hash, validate_spec
from archscreen.core.training.loop import Callback, StepFn, StepHook, TrainConfig, TrainResult, train
from archscreen.core.training.model import ScreenModel, build_plain_model

__all__ = ["RUN_FIELDS", "Build", "Run", "RunResult", "SpecLike", "plain_model", "start_run"]

SpecLike = ArchSpec | str | Path | dict[str, Any]
Build = Callable[[ArchSpec, DatasetSplits], tuple[ScreenModel, Optimizer]]
"""``build(spec, data) -> (model, optimizer)``, called on the CPU after ``torch.manual_seed``."""


@dataclass(frozen=True, kw_only=True)
class RunResult:
    """What every run reports: which spec on which data, and its best-epoch metrics and curves.

    ``val_bpc``/``test_bpc`` (bits per character) are set for language models, ``*_mse`` for
    regression, ``*_accuracy`` for classification, and ``*_balanced_accuracy``/``*_macro_f1``
    (:mod:`archscreen.core.training.metrics`) for classification too (language models: None).
    Subclasses list their serialised key order in ``SERIAL_ORDER``: :meth:`to_dict` keeps the
    order the results had before the fields were shared (stored results and ``--json`` output
    read the same).
    """

    SERIAL_ORDER: ClassVar[tuple[str, ...]] = ()

    spec_name: str
    spec_hash: str
    dataset: str
    task: str
    seed: int
    val_loss: float
    val_accuracy: float | None
    test_loss: float
    test_accuracy: float | None
    val_bpc: float | None
    test_bpc: float | None
    val_mse: float | None
    test_mse: float | None
    epochs: int
    best_epoch: int
    steps: int
    seconds: float
    stopped_because: str
    curves: list[dict[str, Any]] = field(default_factory=list)
    # Added after the fields above (so serialised after them, RUN_FIELDS leaves them out); None
    # for language models and regression, and in results stored before they existed.
    val_balanced_accuracy: float | None = None
    test_balanced_accuracy: float | None = None
    val_macro_f1: float | None = None
    test_macro_f1: float | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        first = [k for k in self.SERIAL_ORDER if k in d]
        return {**{k: d[k] for k in first}, **{k: v for k, v in d.items() if k not in first}}

    def score(self, metric: str = "val_loss") -> float:
        """The ranking score; lower is better for losses, higher for accuracies."""
        value = getattr(self, metric)
        if value is None:
            raise ValueError(f"metric {metric} is not available for task {self.task}")
        return float(value)


_NAMES = [f.name for f in fields(RunResult)]
RUN_FIELDS: tuple[str, ...] = tuple(_NAMES[: _NAMES.index("curves")])
"""The shared fields in order up to ``curves`` (serialised last): the key order results had
before the class-balanced metrics, which follow every older key."""


@dataclass
class Run:
    """A built, validated, seeded run on its device, ready to train."""

    arch: ArchSpec
    splits: DatasetSplits
    config: TrainConfig
    model: ScreenModel
    optimizer: Optimizer

    def identity(self) -> dict[str, Any]:
        """The :class:`RunResult` fields that name the run (spec, hash, dataset, task, seed)."""
        return {
            "spec_name": self.arch.name,
            "spec_hash": spec_hash(self.arch),
            "dataset": self.splits.info.name,
            "task": self.splits.info.task,
            "seed": self.config.seed,
        }

    def train(
        self,
        *,
        callback: Callback | None = None,
        step_hook: StepHook | None = None,
        checkpoint_path: str | Path | None = None,
        step_fn: StepFn | None = None,
    ) -> TrainResult:
        return train(
            self.model,
            self.optimizer,
            self.splits,
            self.config,
            checkpoint_path=checkpoint_path,
            callback=callback,
            step_hook=step_hook,
            step_fn=step_fn,
        )

    def result_fields(self, result: TrainResult) -> dict[str, Any]:
        """Every :class:`RunResult` field of this run once trained."""
        return {**self.identity(), **result.metric_fields(self.splits.info.task)}


def start_run(spec: SpecLike, data: DatasetSplits | str, config: TrainConfig, build: Build) -> Run:
    """Parse, load, validate (``SpecError`` before any training), seed, build on the CPU, move.

    The model and optimizer are built on the CPU so that a run's initial weights (and Alrao's
    per-feature rates, drawn at construction) are the same on every device; per-parameter
    optimizer state created beside the CPU parameters is cast to the device by a
    ``load_state_dict`` round trip.
    """
    arch = spec if isinstance(spec, ArchSpec) else parse_spec(spec)
    splits = load_dataset(data, seed=config.seed) if isinstance(data, str) else data
    validate_spec(arch, splits.info)
    torch.manual_seed(config.seed)
    model, optimizer = build(arch, splits)
    if torch.device(config.device).type != "cpu":
        model.to(config.device)
        optimizer.load_state_dict(optimizer.state_dict())
    return Run(arch=arch, splits=splits, config=config, model=model, optimizer=optimizer)


def plain_model(spec: ArchSpec, data: DatasetSplits) -> ScreenModel:
    """The spec's body with a plain (single) output layer: what fixed-rate and tuning runs train
    (:func:`~archscreen.core.training.model.build_plain_model`, which also rebuilds an exported one)."""
    return build_plain_model(spec, data.info)

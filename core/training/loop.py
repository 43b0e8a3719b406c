"""One training loop for every screener: early stopping, budgets, checkpoints.

The loop trains ``model`` (a :class:`~archscreen.core.training.model.ScreenModel`:
body + head) with any ``torch.optim.Optimizer``. Per epoch it evaluates on the
validation split, records curves, writes a checkpoint that resumes bit-for-bit,
and calls the progress callback. Everything it carries between epochs is one
:class:`~archscreen.core.training.state.LoopState`, and the checkpoint is that object
serialised. It stops on (each rule a small object in :mod:`archscreen.core.training.stopping`,
checked in this order after each epoch; ``cancelled`` is no rule):

* ``diverged``: a non-finite training or validation loss;
* ``patience``: no improvement of the validation loss for ``patience`` epochs;
* ``plateau`` (only with ``TrainConfig(stop_rule="plateau")``, the curve-aware budget): the
  exponentially smoothed validation loss has not improved by a relative ``plateau_tol`` for
  ``patience`` epochs *and* the run has taken its minimum number of optimizer steps;
* ``wall_clock_s``: the budget is checked after each epoch;
* ``max_epochs``;
* ``cancelled``: the callback raised :class:`TrainingCancelled` (after an epoch),
  or the step hook did (mid-epoch: the unfinished epoch is dropped, so a
  service can stop a job within one step of a cancel request).

At the end the weights of the best epoch (lowest validation loss) are restored
and the validation and test metrics are reported for that epoch. The loop
avoids host syncs inside a step: the running training loss is accumulated on
the device and read once per epoch.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from archscreen.core.data.base import DatasetSplits
from archscreen.core.defaults import NO_DATASET_MAX_EPOCHS, SCREENING
from archscreen.core.training.metrics import class_scores, confusion_counts
from archscreen.core.training.state import (
    CHECKPOINT_FORMAT,
    CheckpointFormatError,
    EpochRecord,
    LoopState,
    StopReason,
)
from archscreen.core.training.stopping import StopCondition, first_fired, stop_rules

LN2 = math.log(2.0)
StopRule = Literal["patience", "plateau"]


class TrainingCancelled(Exception):
    """Raised by a callback to stop training; the loop keeps the partial curves."""


@dataclass(frozen=True)
class TrainConfig:
    """Budget and loop settings shared by every screener.

    Args:
        max_epochs: upper bound on epochs. The default is for no dataset in particular
            (``NO_DATASET_MAX_EPOCHS``); a study's ``"auto"`` is its dataset's measured cap
            (:func:`archscreen.core.defaults.default_max_epochs`).
        patience: epochs without a lower validation loss before stopping
            (the Alrao paper uses 20 on CIFAR-10).
        batch_size: training minibatch size (paper: 32).
        wall_clock_s: optional time budget in seconds, checked after each epoch.
        seed: seeds the data order and (through the caller) the initialisation.
        device: ``cpu``, ``cuda`` or ``cuda:N``.
        eval_batch_size: minibatch size for evaluation only.
        max_steps_per_epoch: optional cap on steps per epoch (for tiny test runs).
        stop_rule: ``patience`` (default, the behaviour before the switch existed): stop after
            ``patience`` epochs without a lower raw validation loss. ``plateau``: the
            curve-aware budget (fidelity study II, ``docs/fidelity.md``). Alrao's raw
            validation curve is noisy (features with large rates), so raw patience stops slow
            learners on a bump, while a longer fixed patience wastes epochs on runs that have
            long converged. ``plateau`` smooths the curve (EMA, weight ``plateau_ema`` on the
            newest epoch), counts epochs in which the smoothed loss fails to improve by a
            relative ``plateau_tol``, stops after ``patience`` of them, but never before
            ``plateau_min_steps`` optimizer steps *and* ``plateau_min_epochs`` epochs (so the
            floor scales with the dataset: small datasets need more epochs for the same
            steps), and never after ``max_epochs`` (the cap).
        plateau_ema, plateau_tol, plateau_min_steps, plateau_min_epochs: see ``stop_rule``.
        pause_at: optional epoch at which :func:`train` returns (``stopped_because="paused"``)
            without finishing the run: ASHA's rung (a search study's screening run, trained
            rung by rung). No stop rule reads it and the checkpoint is not marked finished, so a
            later call with a higher ``pause_at`` (or none) continues from the checkpoint exactly
            as the uninterrupted run would have gone on; ``max_epochs`` stays the budget's cap
            (the epoch cap, the estimate's horizon). A run whose rule fires first stops as usual.
    """

    # the screening defaults, defined once (core/defaults.py)
    max_epochs: int = NO_DATASET_MAX_EPOCHS  # a study resolves "auto" for its dataset
    patience: int = SCREENING.patience
    batch_size: int = SCREENING.batch_size
    wall_clock_s: float | None = None
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 1024
    max_steps_per_epoch: int | None = None
    stop_rule: StopRule = SCREENING.stop_rule
    plateau_ema: float = SCREENING.plateau_ema
    plateau_tol: float = SCREENING.plateau_tol
    plateau_min_steps: int = SCREENING.plateau_min_steps
    plateau_min_epochs: int = SCREENING.plateau_min_epochs
    pause_at: int | None = None

    def __post_init__(self) -> None:
        if self.stop_rule not in ("patience", "plateau"):
            raise ValueError(f"stop_rule must be 'patience' or 'plateau', got {self.stop_rule!r}")
        if not 0 < self.plateau_ema <= 1:
            raise ValueError(f"plateau_ema must be in (0, 1], got {self.plateau_ema}")
        if not 0 <= self.plateau_tol < 1:
            raise ValueError(f"plateau_tol must be in [0, 1), got {self.plateau_tol}")
        if self.plateau_min_steps < 0 or self.plateau_min_epochs < 0:
            raise ValueError("plateau_min_steps and plateau_min_epochs must be >= 0")
        if self.max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {self.max_epochs}")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.wall_clock_s is not None and self.wall_clock_s <= 0:
            raise ValueError(f"wall_clock_s must be > 0, got {self.wall_clock_s}")
        if self.pause_at is not None and self.pause_at < 1:
            raise ValueError(f"pause_at must be >= 1, got {self.pause_at}")


@dataclass(frozen=True)
class Progress:
    """What a callback sees after each epoch."""

    epoch: int
    max_epochs: int
    record: EpochRecord
    best_val_loss: float
    best_epoch: int
    elapsed_s: float
    extra: dict[str, Any] = field(default_factory=dict)


Callback = Callable[[Progress], None]
StepHook = Callable[[int, int], None]  # (step within epoch, steps per epoch)
# Runs one whole training step on a minibatch and returns the model's output object
# (with ``avg_nll``): lets a learning-rate tuner see the batch and run its own step.
StepFn = Callable[[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor], Any]


@dataclass(frozen=True)
class SplitMetrics:
    """One split's metrics; ``balanced_accuracy`` and ``macro_f1`` (:mod:`.metrics`) are set for
    classification only."""

    loss: float
    accuracy: float | None
    mse: float | None
    balanced_accuracy: float | None = None
    macro_f1: float | None = None


@dataclass(frozen=True)
class TrainResult:
    """Outcome of one run; metrics are those of the best epoch."""

    val: SplitMetrics
    test: SplitMetrics
    best_epoch: int
    epochs: int
    steps: int
    seconds: float
    stopped_because: StopReason
    curves: list[EpochRecord]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def metric_fields(self, task: str) -> dict[str, Any]:
        """The best-epoch metrics as the flat fields screening and tuning results share.

        ``val_bpc``/``test_bpc`` (bits per character) are set for language models only.
        """
        lm = task == "language_model"
        return {
            "val_loss": self.val.loss,
            "val_accuracy": self.val.accuracy,
            "test_loss": self.test.loss,
            "test_accuracy": self.test.accuracy,
            "val_balanced_accuracy": self.val.balanced_accuracy,
            "test_balanced_accuracy": self.test.balanced_accuracy,
            "val_macro_f1": self.val.macro_f1,
            "test_macro_f1": self.test.macro_f1,
            "val_bpc": self.val.loss / LN2 if lm else None,
            "test_bpc": self.test.loss / LN2 if lm else None,
            "val_mse": self.val.mse,
            "test_mse": self.test.mse,
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "steps": self.steps,
            "seconds": self.seconds,
            "stopped_because": self.stopped_because,
            "curves": [asdict(r) for r in self.curves],
        }


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> SplitMetrics:
    """Mean loss of the (averaged) model and accuracy or MSE over one split; for classification
    also balanced accuracy and macro-F1, from the confusion matrix of the averaged prediction
    (Alrao's Switch-averaged ``avg_log_prob``, as the accuracy)."""
    was_training = model.training
    model.eval()
    total_nll = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.float64, device=x.device)
    sq_err = torch.zeros((), dtype=torch.float64, device=x.device)
    confusion: torch.Tensor | None = None  # classification only; sized by the first batch's classes
    count = 0
    task = getattr(model, "task", "classification")
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        out = model(xb, yb)
        n_targets = yb.numel() if task == "language_model" else len(yb)
        total_nll += out.avg_nll.double() * n_targets
        if task == "regression":
            sq_err += (out.avg_log_prob.double() - yb.double()).pow(2).mean(dim=-1).sum()
        else:
            pred = out.avg_log_prob.argmax(dim=-1)
            correct += (pred.reshape(-1) == yb.reshape(-1)).sum()
            if task == "classification":
                batch = confusion_counts(yb, pred, out.avg_log_prob.shape[-1])
                confusion = batch if confusion is None else confusion + batch
        count += n_targets
    model.train(was_training)
    loss = (total_nll / max(count, 1)).item()
    if task == "regression":
        return SplitMetrics(loss=loss, accuracy=None, mse=(sq_err / max(count, 1)).item())
    balanced, macro_f1 = class_scores(confusion) if confusion is not None else (None, None)
    return SplitMetrics(
        loss=loss,
        accuracy=(correct / max(count, 1)).item(),
        mse=None,
        balanced_accuracy=balanced,
        macro_f1=macro_f1,
    )


class DiskFull(OSError):
    """A checkpoint does not fit on its disk; the message starts with ``disk full`` and names the
    bytes needed and free. Nothing was written (no temporary file is left)."""


#: Free bytes every checkpoint save must leave on its disk (a service sets it from its settings).
CHECKPOINT_FREE_MARGIN_BYTES = 0


def _tensor_bytes(obj: Any) -> int:
    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(v) for v in obj.values())
    if isinstance(obj, list | tuple):
        return sum(_tensor_bytes(v) for v in obj)
    return 0


def _disk_full(path: Path, need: int, free: int) -> DiskFull:
    return DiskFull(
        errno.ENOSPC,
        f"disk full: a checkpoint needs {need} bytes (with a margin of {CHECKPOINT_FREE_MARGIN_BYTES})"
        f" but {free} bytes are free on {path.parent}",
    )


def _atomic_save(obj: Any, path: Path) -> None:
    """Write ``obj`` to ``path`` whole or not at all.

    Raises :class:`DiskFull` before writing when the disk lacks the checkpoint's size plus
    :data:`CHECKPOINT_FREE_MARGIN_BYTES`, or when the write itself runs out of space.
    """
    # about the tensors' bytes plus pickle framing
    need = _tensor_bytes(obj) + 64 * 1024 + CHECKPOINT_FREE_MARGIN_BYTES
    free = shutil.disk_usage(path.parent).free
    if free < need:
        raise _disk_full(path, need, free)
    # one temporary file per process: two writers (a job handed to a second worker while the
    # first still runs) never interleave their bytes; os.replace keeps the last whole file
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        # torch's writer reports ENOSPC as a RuntimeError; tell it by the space left
        if isinstance(exc, OSError | RuntimeError) and not isinstance(exc, DiskFull):
            free = shutil.disk_usage(path.parent).free
            if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or free < need:
                raise _disk_full(path, need, free) from exc
        raise


def steps_per_epoch(n_train: int, config: TrainConfig) -> int:
    """Optimizer steps in one epoch: every minibatch of the training split, up to the config's cap."""
    steps = math.ceil(n_train / config.batch_size)
    if config.max_steps_per_epoch is not None:
        steps = min(steps, config.max_steps_per_epoch)
    return steps


@dataclass(frozen=True)
class _Run:
    """What stays fixed during one call of :func:`train`: the splits on the device, the batching,
    and the caller's step and hooks."""

    config: TrainConfig
    device: torch.device
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    steps_per_epoch: int
    step_fn: StepFn | None
    step_hook: StepHook | None
    callback: Callback | None

    @classmethod
    def on_device(
        cls,
        data: DatasetSplits,
        config: TrainConfig,
        step_fn: StepFn | None,
        step_hook: StepHook | None,
        callback: Callback | None,
    ) -> _Run:
        device = torch.device(config.device)
        return cls(
            config=config,
            device=device,
            x_train=data.x_train.to(device),
            y_train=data.y_train.to(device),
            x_val=data.x_val.to(device),
            y_val=data.y_val.to(device),
            x_test=data.x_test.to(device),
            y_test=data.y_test.to(device),
            steps_per_epoch=steps_per_epoch(len(data.x_train), config),
            step_fn=step_fn,
            step_hook=step_hook,
            callback=callback,
        )


class _Clock:
    """Seconds of training over all resumes: the checkpoint's count plus this call's time."""

    def __init__(self, before: float) -> None:
        self.before = before
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return self.before + time.perf_counter() - self.t0


def _train_epoch(state: LoopState, run: _Run) -> torch.Tensor | None:
    """One pass over a fresh permutation of the training split.

    Returns the summed training loss (on the device: no host sync per step), or None when the
    step hook raised :class:`TrainingCancelled` (the unfinished epoch is dropped).
    """
    model, optimizer, batch = state.model, state.optimizer, run.config.batch_size
    after_step = getattr(model, "after_step", None)
    model.train()
    perm = torch.randperm(len(run.x_train), generator=state.order_gen).to(run.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=run.device)
    for step in range(run.steps_per_epoch):
        idx = perm[step * batch : (step + 1) * batch]
        xb, yb = run.x_train.index_select(0, idx), run.y_train.index_select(0, idx)
        if run.step_fn is None:
            optimizer.zero_grad(set_to_none=True)
            out = model(xb, yb)
            out.loss.backward()
            optimizer.step()
        else:
            out = run.step_fn(model, optimizer, xb, yb)
        if after_step is not None:
            after_step(out)
        loss_sum += out.avg_nll.detach().double()
        state.total_steps += 1
        if run.step_hook is not None:
            try:
                run.step_hook(step + 1, run.steps_per_epoch)
            except TrainingCancelled:
                return None
    return loss_sum


def _epoch_record(state: LoopState, run: _Run, loss_sum: torch.Tensor, epoch_t0: float) -> EpochRecord:
    """The record of the epoch just trained: its mean training loss and validation metrics."""
    train_loss = (loss_sum / run.steps_per_epoch).item()
    val = evaluate(state.model, run.x_val, run.y_val, run.config.eval_batch_size)
    return EpochRecord(
        epoch=state.epoch + 1,
        train_loss=train_loss,
        val_loss=val.loss,
        val_accuracy=val.accuracy,
        seconds=time.perf_counter() - epoch_t0,
        steps=run.steps_per_epoch,
        val_mse=val.mse,
    )


def _report(state: LoopState, run: _Run, record: EpochRecord) -> bool:
    """Call the progress callback; True when it raised :class:`TrainingCancelled`."""
    if run.callback is None:
        return False
    progress = Progress(
        epoch=record.epoch,
        max_epochs=run.config.max_epochs,
        record=record,
        best_val_loss=state.best_val,
        best_epoch=state.best_epoch,
        elapsed_s=state.elapsed,
        extra=getattr(state.model, "progress_extra", lambda: {})(),
    )
    try:
        run.callback(progress)
    except TrainingCancelled:
        return True
    return False


def _load_checkpoint(state: LoopState, path: Path, device: torch.device) -> None:
    try:
        state.load_state_dict(torch.load(path, map_location=device, weights_only=False))
    except CheckpointFormatError as exc:
        raise CheckpointFormatError(f"{path}: {exc}") from None


def _result(state: LoopState, run: _Run, stopped: StopReason, clock: _Clock) -> TrainResult:
    """Restore the best epoch's weights and report its validation and test metrics."""
    if state.best_state is not None:
        state.model.load_state_dict(state.best_state)
    val = evaluate(state.model, run.x_val, run.y_val, run.config.eval_batch_size)
    test = evaluate(state.model, run.x_test, run.y_test, run.config.eval_batch_size)
    return TrainResult(
        val=val,
        test=test,
        best_epoch=state.best_epoch,
        epochs=len(state.curves),
        steps=state.total_steps,
        seconds=clock.elapsed(),
        stopped_because=stopped,
        curves=state.curves,
    )


def train(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: DatasetSplits,
    config: TrainConfig,
    *,
    checkpoint_path: str | Path | None = None,
    callback: Callback | None = None,
    step_hook: StepHook | None = None,
    step_fn: StepFn | None = None,
) -> TrainResult:
    """Train until a stop rule fires; resume from ``checkpoint_path`` if it exists.

    ``model(x, y)`` must return an object with ``loss`` (to backpropagate),
    ``avg_nll`` and ``avg_log_prob``; if the model has ``after_step(out)`` it is
    called after each optimizer step (the Alrao head updates its Switch there).
    The checkpoint is the run's :class:`~archscreen.core.training.state.LoopState`
    serialised (model, optimizer, RNG and loop state), so a resumed run reproduces the
    uninterrupted one exactly (same device, same torch build). A checkpoint of a newer format
    raises :class:`~archscreen.core.training.state.CheckpointFormatError`. A finished run's
    checkpoint (e.g. a job delivered twice) is re-reported, not trained on, unless it stopped at
    the epoch cap and ``config.max_epochs`` is now higher: then it trains on to the new cap (the
    successive halving over tuning starts, :mod:`archscreen.core.tuners.stage`, promotes a run
    from one rung to the next this way).

    ``step_fn(model, optimizer, xb, yb)``, if given, replaces the default step
    (``zero_grad``, forward, backward, ``optimizer.step()``) and returns the
    model's output; ``after_step`` is still called with it.
    """
    run = _Run.on_device(data, config, step_fn, step_hook, callback)
    model.to(run.device)
    state = LoopState(model, optimizer, torch.Generator().manual_seed(config.seed))
    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None
    if ckpt is not None and ckpt.exists():
        _load_checkpoint(state, ckpt, run.device)
    if state.stopped_because == "max_epochs" and state.epoch < config.max_epochs:
        state.stopped_because = None  # the cap was raised: the run trains on (a promoted rung)
    rules = stop_rules(config)
    clock = _Clock(state.elapsed)
    stopped = state.stopped_because
    pause_at = config.pause_at if config.pause_at is not None else config.max_epochs
    while stopped is None and state.epoch < min(config.max_epochs, pause_at):
        epoch_t0 = time.perf_counter()
        loss_sum = _train_epoch(state, run)
        if loss_sum is None:
            stopped = "cancelled"  # mid-epoch: the unfinished epoch is not checkpointed
            break
        state.end_epoch(_epoch_record(state, run, loss_sum, epoch_t0), config)
        state.elapsed = clock.elapsed()
        stopped = first_fired(rules, state)
        if _report(state, run, state.curves[-1]):
            stopped = "cancelled"
        state.stopped_because = stopped
        if ckpt is not None:
            _atomic_save(state.state_dict(), ckpt)
    if stopped is None and state.epoch < config.max_epochs:
        stopped = "paused"  # at pause_at: the checkpoint says not finished (stopped_because None)
    return _result(state, run, stopped or "max_epochs", clock)


__all__ = [
    "CHECKPOINT_FORMAT",
    "Callback",
    "CheckpointFormatError",
    "DiskFull",
    "EpochRecord",
    "LoopState",
    "Progress",
    "SplitMetrics",
    "StepFn",
    "StepHook",
    "StopCondition",
    "StopReason",
    "StopRule",
    "TrainConfig",
    "TrainResult",
    "TrainingCancelled",
    "evaluate",
    "steps_per_epoch",
    "train",
]

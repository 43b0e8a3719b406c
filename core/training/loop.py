"""One training loop for every screener: early stopping, budgets, checkpoints.

The loop trains ``model`` (a :class:`~archscreen.core.training.model.ScreenModel`:
body + head) with any ``torch.optim.Optimizer``. Per epoch it evaluates on the
validation split, records curves, writes a checkpoint that resumes bit-for-bit,
and calls the progress callback. It stops on:

* ``patience``: no improvement of the validation loss for ``patience`` epochs;
* ``plateau`` (only with ``TrainConfig(stop_rule="plateau")``, the curve-aware budget): the
  exponentially smoothed validation loss has not improved by a relative ``plateau_tol`` for
  ``patience`` epochs *and* the run has taken its minimum number of optimizer steps;
* ``max_epochs``;
* ``wall_clock_s``: the budget is checked after each epoch;
* ``diverged``: a non-finite training or validation loss;
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
from archscreen.core.defaults import SCREENING

LN2 = math.log(2.0)
StopReason = Literal["patience", "plateau", "max_epochs", "wall_clock", "diverged", "cancelled"]
StopRule = Literal["patience", "plateau"]


class TrainingCancelled(Exception):
    """Raised by a callback to stop training; the loop keeps the partial curves."""


@dataclass(frozen=True)
class TrainConfig:
    """Budget and loop settings shared by every screener.

    Args:
        max_epochs: upper bound on epochs.
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
    """

    # the screening defaults, defined once (core/defaults.py)
    max_epochs: int = SCREENING.max_epochs
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


@dataclass(frozen=True)
class EpochRecord:
    """Metrics of one finished epoch (``val_accuracy`` is None for regression, ``val_mse`` is set
    for regression only: the learning curve an estimate of the best-rate MSE extrapolates)."""

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float | None
    seconds: float
    steps: int
    val_mse: float | None = None


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
    loss: float
    accuracy: float | None
    mse: float | None


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
    """Mean loss of the (averaged) model and accuracy or MSE over one split."""
    was_training = model.training
    model.eval()
    total_nll = torch.zeros((), dtype=torch.float64, device=x.device)
    correct = torch.zeros((), dtype=torch.float64, device=x.device)
    sq_err = torch.zeros((), dtype=torch.float64, device=x.device)
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
        count += n_targets
    model.train(was_training)
    loss = (total_nll / max(count, 1)).item()
    if task == "regression":
        return SplitMetrics(loss=loss, accuracy=None, mse=(sq_err / max(count, 1)).item())
    return SplitMetrics(loss=loss, accuracy=(correct / max(count, 1)).item(), mse=None)


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


def _clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


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
    The checkpoint holds model, optimizer, RNG and loop state, so a resumed run
    reproduces the uninterrupted one exactly (same device, same torch build).

    ``step_fn(model, optimizer, xb, yb)``, if given, replaces the default step
    (``zero_grad``, forward, backward, ``optimizer.step()``) and returns the
    model's output; ``after_step`` is still called with it.
    """
    device = torch.device(config.device)
    model.to(device)
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_val, y_val = data.x_val.to(device), data.y_val.to(device)
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    n_train = len(x_train)
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    if config.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)

    order_gen = torch.Generator().manual_seed(config.seed)
    curves: list[EpochRecord] = []
    stopped: StopReason = "max_epochs"
    best_val = math.inf
    best_epoch = 0
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs = 0
    # the curve-aware budget's smoothed curve (stop_rule="plateau")
    ema = math.nan
    best_ema = math.inf
    ema_bad = 0
    total_steps = 0
    elapsed_before = 0.0
    start_epoch = 1
    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None

    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        order_gen.set_state(state["order_gen"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        curves = [EpochRecord(**r) for r in state["curves"]]
        best_val, best_epoch, bad_epochs = state["best_val"], state["best_epoch"], state["bad_epochs"]
        ema, best_ema = state.get("ema", math.nan), state.get("best_ema", math.inf)
        ema_bad = state.get("ema_bad", 0)
        best_state = state["best_state"]
        total_steps, elapsed_before = state["total_steps"], state["elapsed"]
        start_epoch = state["epoch"] + 1
        if state.get("stopped_because") is not None:
            # A finished run (e.g. a job delivered twice): re-report, do not train on.
            start_epoch = config.max_epochs + 1
            stopped = state["stopped_because"]
    t0 = time.perf_counter()
    after_step = getattr(model, "after_step", None)
    cancelled_mid_epoch = False

    for epoch in range(start_epoch, config.max_epochs + 1):
        epoch_t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n_train, generator=order_gen).to(device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        for step in range(steps_per_epoch):
            idx = perm[step * config.batch_size : (step + 1) * config.batch_size]
            xb, yb = x_train.index_select(0, idx), y_train.index_select(0, idx)
            if step_fn is None:
                optimizer.zero_grad(set_to_none=True)
                out = model(xb, yb)
                out.loss.backward()
                optimizer.step()
            else:
                out = step_fn(model, optimizer, xb, yb)
            if after_step is not None:
                after_step(out)
            loss_sum += out.avg_nll.detach().double()
            total_steps += 1
            if step_hook is not None:
                try:
                    step_hook(step + 1, steps_per_epoch)
                except TrainingCancelled:
                    cancelled_mid_epoch = True
                    break
        if cancelled_mid_epoch:
            stopped = "cancelled"
            break
        train_loss = (loss_sum / steps_per_epoch).item()
        val = evaluate(model, x_val, y_val, config.eval_batch_size)
        record = EpochRecord(
            epoch=epoch,
            train_loss=train_loss,
            val_loss=val.loss,
            val_accuracy=val.accuracy,
            seconds=time.perf_counter() - epoch_t0,
            steps=steps_per_epoch,
            val_mse=val.mse,
        )
        curves.append(record)
        diverged = not (math.isfinite(train_loss) and math.isfinite(val.loss))
        if not diverged and val.loss < best_val:
            best_val, best_epoch, bad_epochs = val.loss, epoch, 0
            best_state = _clone_state(model)
        else:
            bad_epochs += 1
        if not diverged:
            w = config.plateau_ema
            ema = val.loss if math.isnan(ema) else w * val.loss + (1 - w) * ema
            if not math.isfinite(best_ema) or ema < best_ema - config.plateau_tol * abs(best_ema):
                best_ema, ema_bad = ema, 0
            else:
                ema_bad += 1
        plateaued = (
            ema_bad >= config.patience
            and total_steps >= config.plateau_min_steps
            and epoch >= config.plateau_min_epochs
        )
        elapsed = elapsed_before + time.perf_counter() - t0
        finished: StopReason | None = None
        if diverged:
            finished = "diverged"
        elif config.stop_rule == "patience" and bad_epochs >= config.patience:
            finished = "patience"
        elif config.stop_rule == "plateau" and plateaued:
            finished = "plateau"
        elif config.wall_clock_s is not None and elapsed >= config.wall_clock_s:
            finished = "wall_clock"
        elif epoch == config.max_epochs:
            finished = "max_epochs"
        if callback is not None:
            try:
                callback(
                    Progress(
                        epoch=epoch,
                        max_epochs=config.max_epochs,
                        record=record,
                        best_val_loss=best_val,
                        best_epoch=best_epoch,
                        elapsed_s=elapsed,
                        extra=getattr(model, "progress_extra", lambda: {})(),
                    )
                )
            except TrainingCancelled:
                finished = "cancelled"
        if ckpt is not None:
            _atomic_save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "order_gen": order_gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    "curves": [asdict(r) for r in curves],
                    "best_val": best_val,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "ema": ema,
                    "best_ema": best_ema,
                    "ema_bad": ema_bad,
                    "best_state": best_state,
                    "total_steps": total_steps,
                    "elapsed": elapsed,
                    "epoch": epoch,
                    "stopped_because": finished,
                },
                ckpt,
            )
        if finished is not None:
            stopped = finished
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    val = evaluate(model, x_val, y_val, config.eval_batch_size)
    test = evaluate(model, x_test, y_test, config.eval_batch_size)
    return TrainResult(
        val=val,
        test=test,
        best_epoch=best_epoch,
        epochs=len(curves),
        steps=total_steps,
        seconds=elapsed_before + time.perf_counter() - t0,
        stopped_because=stopped,
        curves=curves,
    )

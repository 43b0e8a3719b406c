"""The training loop's state: one object, and the checkpoint is that object serialised.

:class:`LoopState` holds everything :func:`~archscreen.core.training.loop.train` carries from
one epoch to the next: the model and optimizer, the data-order generator, the curves, the best
epoch (its loss and weights), the statistics the stop rules read, the step and time counters.
:meth:`LoopState.state_dict` walks the dataclass's fields, so a field added here is saved and
restored with no other change, and a resumed run cannot miss one.

Checkpoint format (``format_version`` in the file):

* **1**: files written before the field existed (archscreen up to the state-object refactor).
  Same flat keys as version 2; files from before the curve-aware stop rule lack ``ema``,
  ``best_ema`` and ``ema_bad``, which then take their starting values.
* **2** (current): one key per :class:`LoopState` field, plus ``torch_rng`` and ``cuda_rng``
  (the process's random state) and ``format_version``. Tensors and the pieces' own
  ``state_dict()`` only, so other readers (``worker/artifacts.py`` reads ``best_state`` and
  ``model``) keep working.

A file of a newer version than :data:`CHECKPOINT_FORMAT` is refused with
:class:`CheckpointFormatError` before anything is loaded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

if TYPE_CHECKING:
    from archscreen.core.training.loop import TrainConfig

# ``paused``: the run reached ``TrainConfig.pause_at`` (an ASHA rung) with no rule fired; never
# stored in a checkpoint's ``stopped_because``, so the run resumes from it as if never stopped.
StopReason = Literal["patience", "plateau", "max_epochs", "wall_clock", "diverged", "cancelled", "paused"]

#: The checkpoint format this code writes; it reads this one and every older one.
CHECKPOINT_FORMAT = 2

# Fields a checkpoint must hold: without them there is nothing to resume.
_REQUIRED = ("model", "optimizer", "order_gen", "epoch", "torch_rng")


class CheckpointFormatError(ValueError):
    """A checkpoint this code cannot resume (a newer format, or a piece missing)."""


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


@dataclass(eq=False)
class LoopState:
    """Everything one run carries between epochs (see the module docstring for its checkpoint).

    ``best_*``/``bad_epochs`` follow the raw validation loss (the weights restored at the end and
    the ``patience`` rule); ``ema``/``best_ema``/``ema_bad`` its exponentially smoothed curve (the
    ``plateau`` rule). Both are kept whatever the stop rule, so a checkpoint holds the same
    fields for every run.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    order_gen: torch.Generator
    epoch: int = 0  # the last finished epoch
    total_steps: int = 0
    elapsed: float = 0.0  # seconds of training up to the last finished epoch, over all resumes
    curves: list[EpochRecord] = field(default_factory=list)
    best_val: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    ema: float = math.nan
    best_ema: float = math.inf
    ema_bad: int = 0
    stopped_because: StopReason | None = None  # set once a stop rule fired: the run is finished

    @property
    def diverged(self) -> bool:
        """The last epoch's training or validation loss is not finite."""
        last = self.curves[-1]
        return not (math.isfinite(last.train_loss) and math.isfinite(last.val_loss))

    def end_epoch(self, record: EpochRecord, config: TrainConfig) -> None:
        """Account one finished epoch: its record, the best epoch, the smoothed curve."""
        self.epoch = record.epoch
        self.curves.append(record)
        diverged = self.diverged
        if not diverged and record.val_loss < self.best_val:
            self.best_val, self.best_epoch, self.bad_epochs = record.val_loss, record.epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            self.bad_epochs += 1
        if not diverged:
            self._smooth(record.val_loss, config.plateau_ema, config.plateau_tol)

    def _smooth(self, val_loss: float, weight: float, tol: float) -> None:
        # EMA with weight ``weight`` on the newest epoch; an epoch counts as bad unless the smoothed
        # loss improved by a relative ``tol`` on its best
        self.ema = val_loss if math.isnan(self.ema) else weight * val_loss + (1 - weight) * self.ema
        if not math.isfinite(self.best_ema) or self.ema < self.best_ema - tol * abs(self.best_ema):
            self.best_ema, self.ema_bad = self.ema, 0
        else:
            self.ema_bad += 1

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint: every field (pieces by their own ``state_dict``), the RNG, the format."""
        out: dict[str, Any] = {f.name: _saved(getattr(self, f.name)) for f in fields(self)}
        out["torch_rng"] = torch.get_rng_state()
        out["cuda_rng"] = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        out["format_version"] = CHECKPOINT_FORMAT
        return out

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`'s output (any format up to :data:`CHECKPOINT_FORMAT`).

        Raises :class:`CheckpointFormatError` before changing anything when the format is newer
        or a required piece is missing. A field the file lacks keeps its starting value.
        """
        version = saved.get("format_version", 1)
        if not isinstance(version, int) or version > CHECKPOINT_FORMAT:
            raise CheckpointFormatError(
                f"checkpoint format {version!r} is newer than this archscreen reads"
                f" (1 to {CHECKPOINT_FORMAT}): resume it with the version that wrote it, or delete it"
            )
        missing = [k for k in _REQUIRED if k not in saved]
        if missing:
            raise CheckpointFormatError(f"checkpoint lacks {', '.join(missing)}: not a training checkpoint")
        for f in fields(self):  # in field order: the model before the optimizer, as torch expects
            if f.name in saved:
                self._restore(f.name, saved[f.name])
        torch.set_rng_state(saved["torch_rng"])
        if saved.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])

    def _restore(self, name: str, value: Any) -> None:
        current = getattr(self, name)
        if isinstance(current, nn.Module | torch.optim.Optimizer):
            current.load_state_dict(value)
        elif isinstance(current, torch.Generator):
            current.set_state(value)
        elif name == "curves":
            self.curves = [EpochRecord(**r) for r in value]
        else:
            setattr(self, name, value)


def _saved(value: Any) -> Any:
    """One field as the checkpoint holds it: tensors, numbers and plain containers only."""
    if isinstance(value, nn.Module | torch.optim.Optimizer):
        return value.state_dict()
    if isinstance(value, torch.Generator):
        return value.get_state()
    if isinstance(value, list) and value and isinstance(value[0], EpochRecord):
        return [asdict(r) for r in value]
    return value

"""A study's typed configuration: how its candidates are screened and how the best are promoted.

Defined once, here, and read as attributes everywhere: the API validates a request into these
models, ``store/`` keeps their JSON and re-hydrates it into them (see
:class:`archscreen.store.records.StudyRecord`), and the worker and the promotion rule read the
fields, with no second set of defaults. (Not :mod:`archscreen.settings`, which configures a
process, not a study.)

Imports only pydantic and :mod:`archscreen.core.names` (no torch, no SQL), so ``api/``,
``store/`` and ``worker/`` can all import it and ``core/`` need not know it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from archscreen.core.names import Metric, TunerName, default_tuner_for

__all__ = ["REQUEST", "Base", "PromotionPolicy", "ScreeningConfig", "default_tuner"]

# Every request model: unknown fields refused, and no inf/NaN (JSON's 1e999 parses as inf).
REQUEST = ConfigDict(extra="forbid", allow_inf_nan=False)

Base = Literal["sgd", "adam"]


def default_tuner(base: Base) -> TunerName:
    """The tuner a study promotes to when its policy names none: the one that tunes the screening's
    base optimizer (tuning starts from the screening's preferred rate, and an Adam rate is no SGD
    rate). The choice is core's :func:`~archscreen.core.names.default_tuner_for` (the CLI's
    ``archscreen tune`` default calls it too)."""
    return default_tuner_for(base)


class ScreeningConfig(BaseModel):
    """How each candidate is screened (one Alrao run per seed)."""

    model_config = REQUEST

    base: Base = Field(
        "adam",
        description="Alrao's base optimizer: adam (default, see docs/fidelity.md) or sgd (the paper's).",
    )
    lr_min: float | None = Field(None, gt=0, description="Smallest rate; default by base and task.")
    lr_max: float | None = Field(None, gt=0, description="Largest rate; default by base and task.")
    num_copies: int | None = Field(None, ge=1, le=64, description="Output-layer copies; default by task.")
    max_epochs: int = Field(20, ge=1, le=10_000)
    patience: int = Field(
        10,
        ge=1,
        le=10_000,
        description="Epochs without a lower validation loss before a run stops. Alrao's validation curve is "
        "noisier than a single-rate run's and can start on a plateau: twice the patience gave better "
        "rankings in docs/fidelity.md.",
    )
    batch_size: int = Field(32, ge=1, le=65_536)
    seeds: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field(
        default_factory=lambda: [0], min_length=1, max_length=16, json_schema_extra={"uniqueItems": True}
    )
    wall_clock_s: float | None = Field(None, gt=0, description="Per-run budget, checked after each epoch.")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="Cap on steps per epoch (quick studies).")

    @model_validator(mode="after")
    def _range(self) -> ScreeningConfig:
        if self.lr_min is not None and self.lr_max is not None and self.lr_min >= self.lr_max:
            raise ValueError("lr_min must be smaller than lr_max")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")
        return self


class PromotionPolicy(BaseModel):
    """Which candidates become tuning jobs, with which tuner, from how many starting rates."""

    model_config = REQUEST

    top_k: int = Field(1, ge=1, le=100)
    tuner: TunerName | None = Field(
        None,
        description=(
            "Default: fd2 after Alrao-SGD screening, fd2-adam after Alrao-Adam (tuning starts from the "
            "Switch posterior's rate, which is a rate of the screening's base optimizer)."
        ),
    )
    auto: bool = Field(False, description="Promote the top-k once every screening run has ended.")
    metric: Metric = "val_loss"
    starts: int = Field(
        3,
        ge=1,
        le=3,
        description=(
            "Tuning jobs per promoted candidate, each from its own starting rate on the Switch "
            "posterior: the median, then the 25th, then the 75th percentile. The candidate's tuned "
            "answer is its succeeded job with the best validation score (the metric's val_ side; "
            "val_loss for a loss). 1: one job from the posterior's weighted geometric "
            "mean (the single start of studies before this field). A tuner of another optimizer "
            "than the screening's starts once, from its own default rate."
        ),
    )

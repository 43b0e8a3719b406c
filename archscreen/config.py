"""A study's typed configuration: how its candidates are screened and how the best are promoted.

Defined once, here, and read as attributes everywhere: the API validates a request into these
models, ``store/`` keeps their JSON and re-hydrates it into them (see
:class:`archscreen.store.records.StudyRecord`), and the worker and the promotion rule read the
fields, with no second set of defaults. (Not :mod:`archscreen.settings`, which configures a
process, not a study.)

Imports only pydantic, :mod:`archscreen.core.names`, :mod:`archscreen.core.defaults` and the
defaults of :mod:`archscreen.core.asha` (pure Python; no torch,
no SQL), so ``api/``, ``store/`` and ``worker/`` can all import it and ``core/`` need not know it;
:meth:`ScreeningConfig.run` imports core's screening code when it is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from archscreen.core.asha import DEFAULT_MIN_EPOCHS, DEFAULT_REDUCTION_FACTOR
from archscreen.core.defaults import (
    MEASURED_MAX_EPOCHS,
    SCREENING,
    TUNING,
    UPLOADED_BUDGET,
    Base,
    StopRule,
    TuningStart,
    resolve_max_epochs,
)
from archscreen.core.names import Metric, TunerName, default_tuner_for

if TYPE_CHECKING:
    from archscreen.core.screening import AlraoScreener
    from archscreen.core.training.loop import TrainConfig

__all__ = ["REQUEST", "Base", "PromotionPolicy", "ScreeningConfig", "default_tuner"]

# Every request model: unknown fields refused, and no inf/NaN (JSON's 1e999 parses as inf).
REQUEST = ConfigDict(extra="forbid", allow_inf_nan=False)


_MAX_CAP = 10_000
_CAP = TypeAdapter(Annotated[int, Field(ge=1, le=_MAX_CAP)])


def _cap_or_auto(value: Any) -> int | Literal["auto"]:
    """``"auto"`` or an epoch cap in 1..10,000. One validator rather than a union, so that an error
    names the field alone (``screening.max_epochs``), not a union member (``...max_epochs.int``)."""
    if value == "auto":
        return "auto"
    try:
        return _CAP.validate_python(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise PydanticCustomError(err["type"], f"{err['msg']} (or 'auto')") from None


def _measured_caps() -> str:
    return ", ".join(f"{name} {cap}" for name, cap in MEASURED_MAX_EPOCHS.items())


def default_tuner(base: Base) -> TunerName:
    """The tuner a study promotes to when its policy names none: the one that tunes the screening's
    base optimizer (tuning starts from the screening's preferred rate, and an Adam rate is no SGD
    rate). The choice is core's :func:`~archscreen.core.names.default_tuner_for` (the CLI's
    ``archscreen tune`` default calls it too)."""
    return default_tuner_for(base)


class ScreeningConfig(BaseModel):
    """How each candidate is screened (one Alrao run per seed).

    The one definition of the screening options: every default is core's
    (:data:`archscreen.core.defaults.SCREENING`), the OpenAPI schema and the CLI's flags are
    generated from these fields (:func:`archscreen.cli_common.add_model_options`), and
    :meth:`run` turns a config into the run the worker, the CLI and the benches train. A field is
    handed to the :class:`~archscreen.core.screening.AlraoScreener` or
    :class:`~archscreen.core.training.loop.TrainConfig` field of the same name, except the study-level
    :attr:`STUDY_FIELDS`. Adding an option: its field here plus the core code that reads it.
    ``max_epochs`` is ``"auto"`` until resolved for a dataset (:meth:`for_dataset`), which a study
    does once, when it is made, and the local commands before they train.
    """

    model_config = REQUEST

    STUDY_FIELDS: ClassVar[frozenset[str]] = frozenset({"seeds"})
    """Fields of the study (which runs), not of one run."""
    SCREENER_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {
            "base",
            "lr_min",
            "lr_max",
            "num_copies",
            "switch_theta",
            "body_lr_min",
            "body_lr_max",
            "recentre_after",
            "recentre_width",
        }
    )
    """Fields that go to the screener (the rest is the budget, ``TrainConfig``'s): what plain runs
    (``archscreen grid``, ``tune``) do without. tests/test_defaults.py checks it against core."""

    base: Base = Field(
        SCREENING.base,
        description="Alrao's base optimizer: adam (default, see docs/fidelity.md) or sgd (the paper's).",
    )
    lr_min: float | None = Field(None, gt=0, description="Smallest rate; default by base and task.")
    lr_max: float | None = Field(None, gt=0, description="Largest rate; default by base and task.")
    num_copies: int | None = Field(None, ge=1, le=64, description="Output-layer copies; default by task.")
    max_epochs: Annotated[
        int | Literal["auto"],
        PlainValidator(_cap_or_auto),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "integer", "minimum": 1, "maximum": _MAX_CAP},
                    {"const": "auto", "type": "string"},
                ]
            }
        ),
    ] = Field(
        SCREENING.max_epochs,
        description="Epoch cap of each run. auto (the default): the cap measured for the dataset in "
        f"docs/fidelity.md ({_measured_caps()}); an uploaded dataset: at least "
        f"{UPLOADED_BUDGET.min_epochs} passes and {UPLOADED_BUDGET.min_steps:,} optimizer steps at "
        "batch_size. A study stores the resolved number, and reports it here.",
    )
    patience: int = Field(
        SCREENING.patience,
        ge=1,
        le=10_000,
        description="Epochs without a lower validation loss before a run stops. Alrao's validation curve is "
        "noisier than a single-rate run's and can start on a plateau: twice the patience gave better "
        "rankings in docs/fidelity.md.",
    )
    batch_size: int = Field(SCREENING.batch_size, ge=1, le=65_536, description="Training minibatch size.")
    seeds: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field(
        default_factory=lambda: [0],
        min_length=1,
        max_length=16,
        json_schema_extra={"uniqueItems": True},
        description="One screening run per seed.",
    )
    wall_clock_s: float | None = Field(None, gt=0, description="Per-run budget, checked after each epoch.")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="Cap on steps per epoch (quick studies).")
    switch_theta: float = Field(
        SCREENING.switch_theta,
        gt=0,
        lt=1,
        description="Switch prior θ over the output copies: the paper's 0.999 (the authors' code: 0.9999).",
    )
    # The switches measured in docs/fidelity.md (study II); each off by default.
    body_lr_min: float | None = Field(
        None,
        gt=0,
        description="Switch (off): the body's per-feature rates in their own range from this rate "
        "(the copies keep lr_min..lr_max); docs/fidelity.md, study II.",
    )
    body_lr_max: float | None = Field(
        None, gt=0, description="Switch (off): the top of the body's own rate range (see body_lr_min)."
    )
    recentre_after: int | None = Field(
        None,
        ge=1,
        le=10_000,
        description="Switch (off): after this many epochs, redraw the body's rates around the Switch "
        "posterior's preferred rate; docs/fidelity.md, study II (measured: 10).",
    )
    recentre_width: float = Field(
        SCREENING.recentre_width,
        gt=0,
        le=10,
        description="Width in decades of the re-centred body rates (with recentre_after).",
    )
    stop_rule: StopRule = Field(
        SCREENING.stop_rule,
        description="patience: stop after `patience` epochs without a lower validation loss; plateau "
        "(switch): the curve-aware rule of docs/fidelity.md (smoothed curve, step floor).",
    )
    plateau_ema: float = Field(
        SCREENING.plateau_ema, gt=0, le=1, description="plateau rule: EMA weight of the newest epoch."
    )
    plateau_tol: float = Field(
        SCREENING.plateau_tol, ge=0, lt=1, description="plateau rule: relative improvement that counts."
    )
    plateau_min_steps: int = Field(
        SCREENING.plateau_min_steps,
        ge=0,
        le=10**9,
        description="plateau rule: never stop before these optimizer steps.",
    )
    plateau_min_epochs: int = Field(
        SCREENING.plateau_min_epochs,
        ge=0,
        le=10_000,
        description="plateau rule: never stop before these epochs.",
    )

    @model_validator(mode="after")
    def _range(self) -> ScreeningConfig:
        if self.lr_min is not None and self.lr_max is not None and self.lr_min >= self.lr_max:
            raise ValueError("lr_min must be smaller than lr_max")
        body = (self.body_lr_min, self.body_lr_max)
        if body[0] is not None and body[1] is not None and body[0] >= body[1]:
            raise ValueError("body_lr_min must be smaller than body_lr_max")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")
        return self

    def for_dataset(self, dataset: str, train_rows: int | None) -> ScreeningConfig:
        """This config with ``max_epochs="auto"`` resolved for ``dataset`` (``train_rows`` training
        rows: needed for a dataset with no measured cap): what a study stores and a run trains.
        A number is kept as it is.

        Raises:
            ValueError: ``auto`` on a dataset with no measured cap and no ``train_rows``.
        """
        cap = resolve_max_epochs(self.max_epochs, dataset, train_rows, self.batch_size)
        return self if cap == self.max_epochs else self.model_copy(update={"max_epochs": cap})

    @property
    def epoch_cap(self) -> int:
        """``max_epochs`` as a number: a stored study's (resolved when it was created).

        Raises:
            ValueError: ``max_epochs`` is still ``"auto"`` (see :meth:`for_dataset`).
        """
        if self.max_epochs == "auto":
            raise ValueError("max_epochs is 'auto': resolve it for the dataset first (for_dataset)")
        return self.max_epochs

    def run_options(self) -> dict[str, Any]:
        """The options of one run (every field but :attr:`STUDY_FIELDS`), for
        :func:`archscreen.core.screening.screening_run`."""
        return self.model_dump(exclude=set(self.STUDY_FIELDS))

    def run(self, seed: int, device: str = "cpu") -> tuple[AlraoScreener, TrainConfig]:
        """The screener and the budget of the run with ``seed`` on ``device`` (imports torch).

        Raises:
            ValueError: ``max_epochs`` is still ``"auto"`` (resolve it first: :meth:`for_dataset`).
        """
        from archscreen.core.screening import screening_run

        _ = self.epoch_cap  # raises on an unresolved "auto"

        return screening_run(self.run_options(), seed=seed, device=device)


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
            "Under tuning_start multi (the most under posterior-width; halving spends them in one job): "
            "tuning jobs per promoted candidate, each from its own starting rate on the Switch "
            "posterior: the median, then the 25th, then the 75th percentile. The candidate's tuned "
            "answer is its succeeded job with the best validation score (the metric's val_ side; "
            "val_loss for a loss). 1: one job from the posterior's weighted geometric "
            "mean (the single start of studies before this field). A tuner of another optimizer "
            "than the screening's starts once, from its own default rate."
        ),
    )
    tuning_start: TuningStart = Field(
        TUNING.start,
        description=(
            "Where tuning starts (core/tuners/stage.py; measured in docs/benchmarks.md, 'Tuning "
            "stage'). multi: one job per start (see starts). posterior-width: as many of those "
            "starts as the Switch posterior's width asks for (1 when its interquartile range is "
            "within 1/3 decade, 2 within 2/3, else starts). screen-weights: one job that starts from "
            "the best screening run's own weights (body + the output copy the posterior weights "
            "most) at that run's posterior rate; its screening runs keep their weights for it."
        ),
    )
    halving: bool = Field(
        TUNING.halving,
        description=(
            "Spend a candidate's starts through successive halving in one tuning job (eta 3: every "
            "start trains a third of the budget, the best by validation loss trains on to the end) "
            "instead of one full job per start."
        ),
    )


class AshaConfig(BaseModel):
    """Successive halving across a search study's trials (ASHA, ``core/asha.py``; docs/search.md).

    On (the default), each trial's screening run trains to its rung (``min_epochs``·η^i epochs, the
    last rung the screening's ``max_epochs``), is paused there with its checkpoint, and continues
    only if the scheduler promotes it; the runs never promoted are stopped when the search ends.
    Off: one full run each, as a study of submitted candidates. ``min_epochs`` must not exceed the
    screening's ``max_epochs`` (checked against the study's, 422 naming ``search.asha.min_epochs``).
    """

    model_config = REQUEST

    enabled: bool = Field(True, description="Successive halving on; false: one full run per trial.")
    reduction_factor: int = Field(
        DEFAULT_REDUCTION_FACTOR,
        ge=1,
        le=27,
        description="η: each rung keeps the best 1/η of the runs that reached it (1: every run goes on).",
    )
    min_epochs: int = Field(
        DEFAULT_MIN_EPOCHS, ge=1, le=100_000, description="r: the first rung's epochs (at most max_epochs)."
    )


Objective = Literal["val_loss", "params", "latency"]
MAX_TRIALS = 500  # a search study without a budget asks at most this many trials
MAX_TRIALS_BUDGETED = 10_000  # with a budget, the budget ends the search; this bounds the study's rows


class SearchConfig(BaseModel):
    """How a search study's Optuna study runs (issue 29): its sampler, what it minimises, how many
    trials in all, how many screen at once, an optional CPU-seconds budget, and whether ASHA stops
    the poor trials early (:class:`AshaConfig`).

    Samplers: ``tpe`` (default) and ``random``; ``grid`` (Optuna's GridSampler over
    ``core.spec.space.grid_search_space``: every parameter discrete, and ``trials`` equal to the
    grid's size, so the grid is visited once, checked where the space is known, the API's study
    route); ``nsga2`` (NSGA-II, for two objectives). ``objectives``: ``["val_loss"]`` for one, and
    for NSGA-II ``["val_loss", "params"]`` (the screening score and the spec report's parameter
    count) or ``["val_loss", "latency"]`` (the model's forward latency, ms per batch of 32, measured
    by each screening job on its worker after training: ``core/latency.py``), all minimised.

    ``budget_cpu_s``: no new trial is asked once the study's jobs have spent that many CPU-seconds
    (``jobs.cpu_seconds``: the job process's user+system CPU time, also on a GPU worker, where it
    is not GPU time); trials already screening finish, then the usual promotion runs.
    """

    model_config = REQUEST

    sampler: Literal["tpe", "random", "grid", "nsga2"] = Field(
        "tpe",
        description="Optuna's TPESampler, RandomSampler, GridSampler (a discrete space; trials = its "
        "size) or NSGAIISampler (two objectives).",
    )
    objectives: list[Objective] = Field(
        default_factory=lambda: ["val_loss"],
        validate_default=True,  # nsga2 without objectives is refused, naming this field
        description='Minimised: ["val_loss"]; with nsga2 ["val_loss", "params"] (parameter count) or '
        '["val_loss", "latency"] (forward ms per batch of 32, measured on the worker).',
    )
    # before ``trials``: its validator reads the budget (a field validator sees the fields above it)
    budget_cpu_s: float | None = Field(
        None,
        gt=0,
        description="CPU-seconds the study's jobs may spend: no trial is asked past it (running ones "
        "finish); None: no budget.",
    )
    trials: int = Field(
        20,
        ge=1,
        le=MAX_TRIALS_BUDGETED,
        description=f"Trials asked in all; then the usual promotion runs. At most {MAX_TRIALS} without a "
        f"budget; with budget_cpu_s up to {MAX_TRIALS_BUDGETED}, and left out it is that: the budget ends "
        "the search.",
    )
    parallel: int = Field(2, ge=1, le=16, description="Trials screening at once.")
    seed: int | None = Field(None, ge=0, le=2**31 - 1, description="The sampler's seed (None: random).")
    asha: AshaConfig = Field(
        default_factory=AshaConfig,  # type: ignore[arg-type]
        description="Successive halving across trials (ASHA): on by default; `false` or "
        "`{enabled: false}`: one full run per trial.",
    )

    @model_validator(mode="before")
    @classmethod
    def _budget_ends_the_search(cls, data: Any) -> Any:
        """A budgeted search that names no trial count runs until its budget (bench/search.py: a
        trial limit ended archscreen's search before the budget it was given)."""
        if isinstance(data, dict) and data.get("budget_cpu_s") is not None and data.get("trials") is None:
            return {**data, "trials": MAX_TRIALS_BUDGETED}
        return data

    @field_validator("trials")
    @classmethod
    def _trials_beyond_the_limit_need_a_budget(cls, value: int, info: ValidationInfo) -> int:
        if value > MAX_TRIALS and info.data.get("budget_cpu_s") is None:
            raise ValueError(
                f"more than {MAX_TRIALS} trials need a budget (search.budget_cpu_s), which then ends "
                "the search"
            )
        return value

    @field_validator("asha", mode="before")
    @classmethod
    def _asha_switch(cls, value: Any) -> Any:
        """``asha: true/false`` is short for ``{enabled: true/false}`` with the default η and r."""
        return {"enabled": value} if isinstance(value, bool) else value

    @field_validator("objectives")
    @classmethod
    def _objectives_fit_the_sampler(cls, value: list[str], info: ValidationInfo) -> list[str]:
        sampler = info.data.get("sampler", "tpe")
        if sampler == "nsga2" and value not in (["val_loss", "params"], ["val_loss", "latency"]):
            raise ValueError('nsga2 needs two objectives: ["val_loss", "params"] or ["val_loss", "latency"]')
        if sampler != "nsga2" and value != ["val_loss"]:
            raise ValueError(f'sampler {sampler} takes one objective: ["val_loss"] (two need nsga2)')
        return value

    @model_validator(mode="after")
    def _asha_ranks_one_objective(self) -> SearchConfig:
        """ASHA ranks the runs at a rung by one value, so a two-objective (NSGA-II) search runs one
        full run per trial: ASHA is off by default there, and asked for explicitly it is refused."""
        if self.sampler == "nsga2" and self.asha.enabled:
            if "asha" in self.model_fields_set:
                raise ValueError("asha: successive halving ranks by one value; with nsga2 set asha: false")
            object.__setattr__(self, "asha", AshaConfig.model_validate({"enabled": False}))
        return self

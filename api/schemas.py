"""Request and response models of the REST API (every route declares its ``response_model``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    model_validator,
)

# a study's config models live in archscreen.config (store/ and worker/ read them too)
from archscreen.config import (
    REQUEST,
    AshaConfig,
    PromotionPolicy,
    ScreeningConfig,
    SearchConfig,
    default_tuner,
)
from archscreen.core.names import DatasetFormat, JobState, TunerName

T = TypeVar("T")

# Stored naive UTC; served as ISO 8601 with an explicit offset.
UtcDatetime = Annotated[
    datetime, PlainSerializer(lambda d: d.replace(tzinfo=UTC).isoformat(), return_type=str)
]


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL: refuse it here, by field, instead of a driver error later
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
# The datasets a study may name (core/data's registry); the route checks membership too.
BUILTIN_DATASETS = ("mnist1d", "digits", "chartext", "regression")


class Page(BaseModel, Generic[T]):
    """A page of a list: ``count`` is the total across pages."""

    data: list[T]
    count: int


class ErrorItem(BaseModel):
    loc: list[str | int]
    path: str
    msg: str
    type: str = "value_error"


class ErrorResponse(BaseModel):
    detail: str | list[ErrorItem]


class TooLargeResponse(BaseModel):
    """413: a body over the byte limit (``limit_bytes``) or a quota (``limit`` and ``current``)."""

    detail: str
    limit_bytes: int | None = None
    limit: int | None = None
    current: int | None = None


class LimitResponse(BaseModel):
    """429: the tenant is at a limit; retry after ``Retry-After`` seconds."""

    detail: str
    limit: int
    current: int


# ---------------------------------------------------------------------------- studies


def _space_kind(value: Any) -> str:
    return "[text]" if isinstance(value, str) else "[object]"


# A search space document (docs/spec.md, "Search spaces"): an object, or its YAML/JSON text.
SpaceIn = Annotated[
    Annotated[dict[str, Any], Field(json_schema_extra={"required": ["space"]}), Tag("[object]")]
    | Annotated[str, Field(min_length=1), AfterValidator(_no_nul), Tag("[text]")],
    Discriminator(_space_kind),
]


class StudyCreate(BaseModel):
    model_config = REQUEST

    name: str = Field(min_length=1, max_length=200, pattern=r"^[\w.\- ]+$")
    dataset: Text = Field(
        min_length=1,
        max_length=200,
        description="A built-in dataset (see `archscreen datasets`), or ds_<id> of an uploaded one.",
        json_schema_extra={"anyOf": [{"enum": list(BUILTIN_DATASETS)}, {"pattern": r"^ds_[1-9][0-9]{0,9}$"}]},
    )
    screening: ScreeningConfig = Field(
        default_factory=ScreeningConfig,  # type: ignore[arg-type]
        # a rule between two fields, which JSON Schema cannot state: said here, checked (422)
        description="How each candidate is screened. lr_min must be smaller than lr_max when both are given.",
    )
    policy: PromotionPolicy = Field(default_factory=PromotionPolicy)  # type: ignore[arg-type]
    space: SpaceIn | None = Field(
        None,
        description="A search study's space (docs/spec.md, Search spaces); Optuna asks its trials. "
        "A search study takes no submitted candidates.",
    )
    search: SearchConfig | None = Field(None, description="How the space is searched (with `space`).")

    @model_validator(mode="after")
    def _search_needs_space(self) -> StudyCreate:
        if self.search is not None and self.space is None:
            raise ValueError("search needs a space")
        if self.space is not None and self.search is None:
            self.search = SearchConfig.model_validate({})
        return self

    @model_validator(mode="after")
    def _default_tuner(self) -> StudyCreate:
        if self.policy.tuner is None:
            self.policy.tuner = default_tuner(self.screening.base)
        return self


class StudyOut(BaseModel):
    id: int
    name: str
    dataset: str
    screening: ScreeningConfig
    policy: PromotionPolicy
    created_at: UtcDatetime
    candidates: int
    jobs_by_state: dict[str, int]
    auto_promoted: bool
    search: SearchOut | None = Field(None, description="A search study's progress; null otherwise.")


class SearchOut(BaseModel):
    """A search study's progress: trials asked and told, and the best told trial (least val_loss)."""

    sampler: str
    trials: int
    parallel: int
    asked: int
    told: int
    best_value: float | None
    best_params: dict[str, Any] | None
    asha: AshaConfig = Field(description="Successive halving across the trials (on by default).")
    objectives: list[str] = Field(default_factory=lambda: ["val_loss"], description="Minimised, in order.")
    running: int = Field(0, description="Trials asked and not yet told (screening, or about to).")
    pruned: int = Field(0, description="Trials told PRUNED: points refused before they trained.")
    failed: int = Field(0, description="Trials told FAIL: every screening run of the point failed.")
    budget_cpu_s: float | None = Field(None, description="The study's CPU-seconds budget (null: none).")
    cpu_seconds: float = Field(0.0, description="CPU-seconds the study's jobs spent so far.")
    stopped: bool = Field(False, description="Stopped by its owner (POST …/search/stop): no trial is asked.")


# ---------------------------------------------------------------------------- candidates


def _object_or_text(value: Any) -> str:
    return "[text]" if isinstance(value, str) else "[object]"


# The branch is picked by JSON type, so a bad value gets that branch's errors only.
SpecIn = Annotated[
    Annotated[dict[str, Any], Field(json_schema_extra={"required": ["layers", "head"]}), Tag("[object]")]
    | Annotated[str, Field(min_length=1), AfterValidator(_no_nul), Tag("[text]")],
    Discriminator(_object_or_text),
]


class CandidateCreate(BaseModel):
    """One candidate: a spec object (or its YAML/JSON text) and an optional display name."""

    model_config = REQUEST

    # what JSON Schema can say of a spec is said (an object names layers and head, a text is not
    # empty); that the layers fit the dataset only shape inference can tell (422 naming the layer)
    spec: SpecIn = Field(description="A spec object (layers and head), or its YAML or JSON text.")
    name: Text | None = Field(None, max_length=200, description="Default (or empty): the spec's name.")


def _one_or_many(value: Any) -> str:
    return "[many]" if isinstance(value, list) else "[one]"


# A body is one candidate (an object) or several (a list). The discriminator picks the branch by
# JSON type, so errors come from that branch only; its tag (bracketed) is dropped from error paths.
CandidatesIn = Annotated[
    Annotated[CandidateCreate, Tag("[one]")]
    | Annotated[list[CandidateCreate], Tag("[many]"), Field(min_length=1)],
    Discriminator(_one_or_many),
]


class LayerSummary(BaseModel):
    path: str
    kind: str
    input_shape: list[int]
    output_shape: list[int]
    params: int


class Progress(BaseModel):
    epoch: int
    max_epochs: int
    fraction: float
    elapsed_s: float
    eta_s: float | None


class EpochPoint(BaseModel):
    epoch: int
    train_loss: float | None
    val_loss: float | None
    val_accuracy: float | None
    seconds: float
    extra: dict[str, Any] = Field(default_factory=dict)


class ModelFileOut(BaseModel):
    """A succeeded tuning job's model file (``GET /tuning-jobs/{id}/model``)."""

    bytes: int
    sha256: str


class JobOut(BaseModel):
    id: int
    kind: Literal["screen", "tune"]
    candidate_id: int
    study_id: int
    seed: int
    state: JobState
    attempts: int
    max_attempts: int
    cancel_requested: bool
    error: str | None
    progress: Progress
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    result: dict[str, Any] | None
    curves: list[EpochPoint]
    model: ModelFileOut | None = Field(
        None, description="A succeeded tuning job's model file, served at /tuning-jobs/{id}/model."
    )
    start: str | None = Field(
        None,
        description="A tuning job's start: on the Switch posterior (p50, p25, p75; its seed is the start's "
        "index, its training seed the same for every start), or the tuning stage's one-job starts "
        "(screen-weights, halving, screen-weights+halving: policy.tuning_start and policy.halving); null "
        "for a screening run or a single start.",
    )
    init_lr: float | None = Field(None, description="A tuning job's starting rate (null: a screening run).")
    target_epochs: int | None = Field(
        None,
        description="ASHA (a search study's screening run): the epochs of the rung it trains to, or trained "
        "to when paused or stopped (progress.epoch: the epochs it has); null without ASHA.",
    )
    cpu_seconds: float = Field(
        0.0,
        description="CPU time (user + system) the job's processes spent on it, over its attempts, as of "
        "its last recorded epoch; on a GPU worker this is the host's CPU time, not GPU time.",
    )


class CandidateOut(BaseModel):
    id: int
    study_id: int
    name: str
    spec_hash: str
    num_params: int
    state: JobState = Field(
        description="From its screening runs: running, queued, paused (ASHA: at its rung, waiting for a "
        "promotion), failed, diverged, cancelled, stopped (ASHA: never promoted when the search ended), "
        "else succeeded."
    )
    rung_epochs: int | None = Field(
        None,
        description="ASHA (a search study): the epochs of the rung the candidate's screening runs reached "
        "(the screening's max_epochs once at the top rung); null without ASHA. Ranked rows are ordered by it "
        "first, then by score: a run stopped at a low rung never outranks a completed one.",
    )
    created: bool = Field(False, description="True when this request created the candidate.")
    created_at: UtcDatetime
    cpu_seconds: float = Field(0.0, description="CPU-seconds its jobs spent (the sum of their cpu_seconds).")


class EstimateOut(BaseModel):
    """The score the architecture would reach with its best learning rate, extrapolated from its
    screening run's validation curve (``core/estimate.py``: a learning curve fitted to the per-epoch
    validation score and read at the budget's epoch cap), averaged over the succeeded seeds.
    ``low``/``high`` are the fit's own uncertainty band, not a calibrated interval (issue 27)."""

    value: float = Field(
        description="Extrapolated best-rate validation score: the mean of the seeds' estimates, in the "
        "units of `metric` (accuracy as a fraction, bits per character, or MSE)."
    )
    low: float = Field(
        description="Lower end of the fit's own uncertainty band: the mean of the seeds' lower bounds. Each "
        "seed's band is the central 90% of the fitted curve's value under its parameter uncertainty: the "
        "extrapolation's own uncertainty, not a calibrated interval for the best-rate score (measured "
        "coverage of that score 0.00-0.42, docs/fidelity.md, Fidelity II). Never above `value`."
    )
    high: float = Field(
        description="Upper end of the fit's own uncertainty band (mean of the seeds' upper bounds); never "
        "below `value`."
    )
    method: str = Field(
        description="The curve fit(s) behind it: `exp-saturation`, `power-law`, or `best-observed` "
        "(no extrapolation; `(fallback)` when the curve was too short or the fit failed: zero width)."
    )
    metric: str | None = Field(
        None, description="What is estimated: val_accuracy (higher is better), val_bpc or val_mse (lower)."
    )
    seeds: int = Field(1, description="Succeeded seeds whose estimates are averaged.")


EstimateField = Annotated[
    EstimateOut | None,
    Field(
        description="The extrapolated best-rate score with the fit's own uncertainty band (`low`, `high`: "
        "not a calibrated interval); null when no succeeded run has "
        "one (runs stored before estimates existed, a curve without a finite point, nothing finished)."
    ),
]


class CandidateDetail(CandidateOut):
    spec: dict[str, Any]
    summary: list[LayerSummary]
    progress: Progress
    metrics: dict[str, float | None]
    preferred_lr: float | None
    switch_posterior: list[dict[str, float]] | None
    estimate: EstimateField = None
    error: str | None
    runs: list[JobOut]


class CancelOut(BaseModel):
    id: int
    states: dict[int, JobState]


class HealthOut(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


# ---------------------------------------------------------------------------- ranking and tuning


class RankRowOut(BaseModel):
    candidate_id: int
    name: str
    state: JobState
    rank: int | None
    score: float | None
    score_std: float | None = Field(description="Spread across seeds (None with one seed).")
    seeds: int
    tied_with: list[int] = Field(
        description="Candidates whose score is within the seed spread of this one (ranked by estimate: "
        "whose estimate interval overlaps this one's)."
    )
    preferred_lr: float | None = Field(description="The Alrao posterior's preferred rate.")
    tuning_job_id: int | None = Field(
        description="The candidate's tuned answer: of its tuning jobs (one per start), the succeeded one "
        "with the best validation score (the metric's val_ side: val_loss for a loss or the estimate); the "
        "first start's job until one has succeeded."
    )
    tuning_state: JobState | None = Field(
        description="running or queued while any start is; succeeded once any start has; else the "
        "first start's state."
    )
    tuned_score: float | None = Field(description="The chosen tuning job's score on the ranking metric.")
    recommended_lr: float | None = Field(description="The chosen tuning job's recommended rate.")
    tuning_start: str | None = Field(
        None,
        description="The chosen job's start (p50, p25, p75, screen-weights, halving, "
        "screen-weights+halving); null for a single start (the posterior's weighted geometric mean or "
        "the tuner's default).",
    )
    tuning_jobs: int = Field(0, description="Tuning jobs of the candidate (one per start).")
    rung_epochs: int | None = Field(
        None,
        description="ASHA (a search study): the epochs of the rung the candidate's screening runs reached "
        "(the screening's max_epochs once at the top rung); null without ASHA. Ranked rows are ordered by it "
        "first, then by score: a run stopped at a low rung never outranks a completed one.",
    )
    estimate: EstimateField = None


class RankingOut(BaseModel):
    study_id: int
    metric: str
    higher_is_better: bool
    data: list[RankRowOut] = Field(description="Finished candidates, best first.")
    count: int
    unranked: list[RankRowOut] = Field(description="Unfinished, failed, diverged or cancelled candidates.")


class PromoteIn(BaseModel):
    """Promote the current top-k, or the given candidates, to tuning jobs."""

    # exactly one of top_k / candidate_ids, stated in the schema as well as checked below
    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["top_k"],
                    "properties": {"top_k": {"type": "integer"}, "candidate_ids": {"type": "null"}},
                },
                {
                    "required": ["candidate_ids"],
                    "properties": {"candidate_ids": {"type": "array"}, "top_k": {"type": "null"}},
                },
            ]
        },
    )

    top_k: int | None = Field(None, ge=1, le=100)
    candidate_ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="Ids of this study's candidates (GET /studies/{study_id}/candidates); another "
        "study's id is a 422.",
    )
    tuner: TunerName | None = Field(None, description="Default: the study's policy.")
    starts: int | None = Field(
        None,
        ge=1,
        le=3,
        description="Tuning jobs per candidate, each from its own starting rate on the Switch posterior "
        "(the median, then the 25th, then the 75th percentile); the candidate's answer is its best by "
        "validation. 1: one job from the posterior's weighted geometric mean. Default: the study's "
        "policy (3). A candidate that already has tuning jobs keeps them, none added.",
    )

    @model_validator(mode="after")
    def _one_of(self) -> PromoteIn:
        if (self.top_k is None) == (self.candidate_ids is None):
            raise ValueError("give exactly one of top_k or candidate_ids")
        return self


class LeaderboardRow(BaseModel):
    rank: int
    candidate_id: int
    name: str
    screened_score: float
    tuned_score: float | None = Field(
        description="The score of the candidate's best tuning job by validation (of its starts)."
    )
    recommended_lr: float | None
    preferred_lr: float | None
    tuning_state: JobState | None
    tuning_job_id: int | None = Field(
        None, description="The tuning job that answers for the candidate (its model is the export's)."
    )
    tuning_start: str | None = Field(
        None, description="That job's start (p50, p25, p75, screen-weights, halving; null: one start)."
    )


class LeaderboardOut(BaseModel):
    study_id: int
    metric: str
    data: list[LeaderboardRow]
    count: int
    best: LeaderboardRow | None = Field(
        description="The answer: the best tuned candidate (or best screened, if none is tuned yet)."
    )


# ---------------------------------------------------------------------------- polling


class CandidateRow(BaseModel):
    id: int
    name: str
    state: JobState
    num_params: int
    progress: Progress
    score: float | None
    score_std: float | None
    rank: int | None
    preferred_lr: float | None
    estimate: EstimateField = None
    error: str | None
    rung_epochs: int | None = Field(
        None,
        description="ASHA (a search study): the epochs of the rung the candidate's runs reached; null "
        "without ASHA.",
    )
    cpu_seconds: float = 0.0


class StudySummary(BaseModel):
    """Everything a dashboard shows for a study, in one request (ETag'd; also the SSE payload)."""

    study: StudyOut
    version: int
    candidate_states: dict[str, int]
    progress: Progress
    candidates: list[CandidateRow]
    ranking: RankingOut
    tuning_jobs: list[JobOut]
    cpu_seconds: float = Field(
        0.0, description="CPU-seconds all the study's jobs spent (screening and tuning)."
    )


# ---------------------------------------------------------------------------- datasets


class ImageFactsOut(BaseModel):
    """How an image upload was converted (:mod:`archscreen.core.data.images`)."""

    mode: Literal["L", "RGB"]
    height: int
    width: int
    mean: list[float] = Field(description="Per channel, on the train split, pixels scaled to 0..1.")
    std: list[float] = Field(description="Per channel, on the train split, pixels scaled to 0..1.")
    median_source_size: list[int] = Field(description="[height, width] of the images as uploaded.")


class TableColumnOut(BaseModel):
    """One feature column of a table and what its preprocessing does (fitted on the train split)."""

    name: str
    kind: Literal["numeric", "categorical"]
    encoding: str = Field(
        description="standardized / as-is (+ median-imputed + missing indicator), or one-hot."
    )
    missing_train: int = Field(description="Missing values in the train split.")
    median: float | None = Field(None, description="Numeric: the value a gap is imputed with.")
    mean: float | None = Field(None, description="Numeric: subtracted (0 when not standardised).")
    scale: float | None = Field(None, description="Numeric: divided by (1 when not standardised).")
    missing_indicator: bool | None = Field(None, description="Numeric: a 0/1 feature flags a gap.")
    categories: list[str] | None = Field(
        None, description="Categorical: the one-hot values, most frequent first; then one 'other' column."
    )
    distinct_train: int | None = Field(None, description="Categorical: distinct values in the train split.")


class PreprocessingOut(BaseModel):
    """A table's preprocessing, stored with the dataset; the exported model applies it to raw rows."""

    version: int
    standardize: bool
    max_categories: int
    features: int = Field(description="Features the network sees (the dataset's input_shape).")
    columns: list[TableColumnOut]


class DatasetOut(BaseModel):
    """An uploaded dataset: a study names it by ``ref`` (``ds_<id>``)."""

    id: int
    ref: str = Field(description='What a study\'s "dataset" field names: ds_<id>.')
    name: str
    format: DatasetFormat
    label_column: str | None
    sha256: str = Field(description="sha256 of the uploaded file.")
    size_bytes: int
    task: Literal["classification", "regression", "language_model"]
    input_shape: list[int]
    input_kind: Literal["float", "tokens"]
    num_classes: int | None
    target_dim: int | None
    vocab_size: int | None
    classes: list[str] | None = Field(description="Class names, for a table with string labels.")
    split_sizes: dict[str, int]
    image: ImageFactsOut | None = Field(None, description="For an image upload: its conversion.")
    class_counts: dict[str, list[int]] | None = Field(
        None, description="Classification: samples per class id in each split."
    )
    dropped_rows_missing_label: int | None = Field(None, description="A table's rows without a label.")
    preprocessing: PreprocessingOut | None = Field(
        None, description="A table's preprocessing (numeric columns standardised by default)."
    )
    created_at: UtcDatetime
    created: bool = Field(False, description="True when this request created the dataset.")


# ---------------------------------------------------------------------------- search view

TrialStateName = Literal["RUNNING", "WAITING", "COMPLETE", "PRUNED", "FAIL"]


class SearchTrialOut(BaseModel):
    """One Optuna trial of a search study, with what archscreen made of it."""

    number: int
    state: TrialStateName = Field(description="Optuna's trial state (see the route for one exception).")
    values: list[float] | None = Field(description="The objective values told (COMPLETE only).")
    params: dict[str, Any]
    candidate_id: int | None = Field(description="The candidate the point became (null: refused).")
    refused: str | None = Field(description="Why the point was refused before it trained.")
    started_at: UtcDatetime | None
    told_at: UtcDatetime | None = Field(description="When the trial was told (Optuna's completion).")
    compute_s: float | None = Field(
        description="Compute this trial spent: seconds of its candidate's screening jobs (the first "
        "trial of a candidate carries its cost; a repeated point costs 0)."
    )


class BestSoFarPoint(BaseModel):
    number: int = Field(description="The trial whose telling this point follows.")
    compute_s: float = Field(description="Cumulative compute of every trial told so far.")
    value: float = Field(description="The best first-objective value told so far.")


class ImportancesOut(BaseModel):
    objective: int = Field(description="The objective's index in ``directions``.")
    values: dict[str, float] = Field(
        description="fANOVA importance per parameter (sums to 1), largest first."
    )


class SearchViewOut(BaseModel):
    """What a search study's dashboard plots: trials, best-so-far vs compute, importances, Pareto front."""

    study_id: int
    sampler: str
    planned_trials: int
    directions: list[Literal["minimize", "maximize"]]
    objectives: list[str] = Field(description="The objectives' names, in the order of each trial's values.")
    compute_measure: str = Field(description="What ``compute_s`` measures.")
    trials: list[SearchTrialOut]
    count: int
    compute_total_s: float
    best_so_far: list[BestSoFarPoint] = Field(
        description="After each told trial (by told time): cumulative compute and the best value."
    )
    importances: list[ImportancesOut] | None = Field(
        description="Optuna's fANOVA importances (seed 0), one entry per objective; null with a reason."
    )
    importances_reason: str | None
    min_complete_for_importances: int
    pareto_front: list[int] | None = Field(
        description="Trial numbers on the Pareto front (Optuna's best_trials); null for one objective."
    )

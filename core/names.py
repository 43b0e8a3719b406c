"""The names the layers above core/ share: tuners, ranking metrics, result metrics and job states,
each defined once here.

No imports beyond ``typing`` and :mod:`archscreen.core.defaults` (standard library only): the
API, the CLI's argument parser and the store read these without loading torch. Each name is a
``Literal`` (so mypy and pydantic check it and the OpenAPI schema lists it as an enum) and a tuple
of its values (for ``argparse`` choices and membership tests), the tuple derived from the ``Literal``.

Adding a tuner: its name goes in :data:`TunerName`, its class in
:data:`archscreen.core.tuning.TUNERS` (a test checks the two agree); the API's schemas, the CLI's
``--tuner`` choices and the benchmarks follow from these. Job states are the store's column values,
defined here (not in store/models.py) so that the Python client reads them without SQLAlchemy.
"""

from __future__ import annotations

from typing import Literal, get_args

from archscreen.core.defaults import SCREENING

__all__ = [
    "ACTIVE_STATES",
    "DATASET_FORMATS",
    "DEFAULT_SCREENING_BASE",
    "DEFAULT_TUNER_BY_BASE",
    "ESTIMATE_METRIC_BY_TASK",
    "FINAL_STATES",
    "HIGHER_IS_BETTER",
    "JOB_STATES",
    "METRIC_NAMES",
    "RANK_METRIC_NAMES",
    "RESULT_METRIC_NAMES",
    "TUNER_NAMES",
    "WAITING_STATES",
    "DatasetFormat",
    "JobState",
    "Metric",
    "RankMetric",
    "TunerName",
    "default_tuner_for",
    "higher_is_better",
]

TunerName = Literal["fd2", "fd1", "salera", "spalera", "ag-adam", "fd2-adam"]
TUNER_NAMES: tuple[TunerName, ...] = get_args(TunerName)

# Tuning starts from the screening's preferred rate, so by default the tuner tunes the screening's
# base optimizer (an Adam rate is no SGD rate), by finite differences (issue 16): fd2 on SGD's
# gradient after Alrao-SGD, fd2-adam on Adam's direction after Alrao-Adam. Read through
# default_tuner_for; ag-adam, fd1, salera and spalera stay available by name.
DEFAULT_TUNER_BY_BASE: dict[str, TunerName] = {"sgd": "fd2", "adam": "fd2-adam"}
DEFAULT_SCREENING_BASE = SCREENING.base
"""The base optimizer of an Alrao screening when none is named (``AlraoScreener``'s and the API's)."""


def default_tuner_for(screener_base: str | None) -> TunerName:
    """The tuner a promotion uses after a screening with ``screener_base`` when none is named.

    ``screener_base`` is the screening's base optimizer (``"adam"``, ``"sgd"``) or the screener's
    name (``"alrao-adam"``); ``None`` (no screening known, e.g. ``archscreen tune`` without
    ``--from-screen``) means the default screening's base. The one rule the service's promotion
    and the CLI's ``archscreen tune`` default both call.
    """
    # a switched screener's name carries its switches after "+" (alrao-adam+recentre@10w1)
    base = DEFAULT_SCREENING_BASE if screener_base is None else screener_base.split("+", 1)[0]
    base = base.removeprefix("alrao-")
    try:
        return DEFAULT_TUNER_BY_BASE[base]
    except KeyError:
        raise ValueError(
            f"no default tuner after a {screener_base!r} screening; expected one of "
            f"{', '.join(DEFAULT_TUNER_BY_BASE)} (or alrao-<base>)"
        ) from None


# A screening result's metrics a study can be ranked by (a policy's metric, the CI gate's).
# Balanced accuracy and macro-F1 weigh every class equally (core/training/metrics.py): for
# imbalanced classes, where plain accuracy rewards predicting the majority class.
Metric = Literal[
    "val_loss",
    "val_accuracy",
    "test_accuracy",
    "test_loss",
    "val_balanced_accuracy",
    "test_balanced_accuracy",
    "val_macro_f1",
    "test_macro_f1",
]
METRIC_NAMES: tuple[Metric, ...] = get_args(Metric)
# metric -> True when higher is better (every metric but a loss)
HIGHER_IS_BETTER: dict[Metric, bool] = {m: not m.endswith("_loss") for m in METRIC_NAMES}

RESULT_METRIC_NAMES: tuple[str, ...] = (*METRIC_NAMES, "val_bpc", "test_bpc", "val_mse", "test_mse")
"""Every best-epoch metric a screening or tuning result holds (``RunResult``'s metric fields):
the API's per-candidate means and the exported model file's ``metrics`` list these."""

# What a ranking (GET /ranking, ``archscreen status``) can order by: a stored metric, or
# ``estimate``, the screening curve extrapolated to the best-rate score (core/estimate.py). Not a
# promotion metric (PromotionPolicy.metric stays a Metric): a tuning job's result has no estimate,
# so the leaderboard could not compare tuned and screened candidates on it.
RankMetric = Literal[Metric, "estimate"]
RANK_METRIC_NAMES: tuple[RankMetric, ...] = get_args(RankMetric)
# The estimate's units follow the task (ScreenResult.estimate): task -> (metric it estimates,
# True when higher is better).
ESTIMATE_METRIC_BY_TASK: dict[str, tuple[str, bool]] = {
    "classification": ("val_accuracy", True),
    "language_model": ("val_bpc", False),
    "regression": ("val_mse", False),
}


def higher_is_better(metric: RankMetric, task: str | None = None) -> bool:
    """The direction of ``metric``; the estimate's depends on the ``task`` (accuracy up, bits per
    character and MSE down); an unknown task (nothing finished yet) reads as classification."""
    if metric == "estimate":
        return ESTIMATE_METRIC_BY_TASK.get(task or "classification", ("", True))[1]
    return HIGHER_IS_BETTER[metric]


# A job's state (store/models.py's column; the API's schemas use this type, its OpenAPI enum).
# ``paused`` and ``stopped`` are a search study's screening runs under ASHA (worker/search.py): a
# run trained to its rung and waits, its checkpoint kept, for the scheduler to promote it
# (``paused``: neither active nor final, it holds no worker), or was left behind when the search
# ended (``stopped``: final; its result is its last rung's).
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled", "diverged", "paused", "stopped"]
JOB_STATES: tuple[JobState, ...] = get_args(JobState)
ACTIVE_STATES: tuple[JobState, ...] = ("queued", "running")
FINAL_STATES: tuple[JobState, ...] = ("succeeded", "failed", "cancelled", "diverged", "stopped")
WAITING_STATES: tuple[JobState, ...] = ("paused",)  # neither active nor final

# An uploaded dataset's file format (store/models.py's column, the API's upload and listing
# schemas): here so that the client's schemas read it without SQLAlchemy.
DatasetFormat = Literal["npz", "parquet", "csv", "image_zip", "image_parquet"]
DATASET_FORMATS: tuple[DatasetFormat, ...] = get_args(DatasetFormat)

"""The names the layers above core/ share: tuners and ranking metrics, each defined once here.

No imports beyond ``typing``: the API, the CLI's argument parser and the store read these
without loading torch. Each name is a ``Literal`` (so mypy and pydantic check it and the
OpenAPI schema lists it as an enum) and a tuple of its values (for ``argparse`` choices and
membership tests), the tuple derived from the ``Literal``.

Adding a tuner: its name goes in :data:`TunerName`, its class in
:data:`archscreen.core.tuning.TUNERS` (a test checks the two agree); the API's schemas, the CLI's
``--tuner`` choices and the benchmarks follow from these.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "DEFAULT_TUNER_BY_BASE",
    "HIGHER_IS_BETTER",
    "METRIC_NAMES",
    "TUNER_NAMES",
    "Metric",
    "TunerName",
]

TunerName = Literal["fd2", "fd1", "salera", "spalera", "ag-adam"]
TUNER_NAMES: tuple[TunerName, ...] = get_args(TunerName)

# Tuning starts from the screening's preferred rate, so by default the tuner tunes the screening's
# base optimizer: an Adam rate is no SGD rate.
DEFAULT_TUNER_BY_BASE: dict[str, TunerName] = {"sgd": "fd2", "adam": "ag-adam"}

# A screening result's metrics a study can be ranked by.
Metric = Literal["val_loss", "val_accuracy", "test_accuracy", "test_loss"]
METRIC_NAMES: tuple[Metric, ...] = get_args(Metric)
# metric -> True when higher is better
HIGHER_IS_BETTER: dict[Metric, bool] = {m: m.endswith("_accuracy") for m in METRIC_NAMES}

"""Small shared inputs for the contract suites: a tiny MLP spec and a cut digits dataset."""

from __future__ import annotations

import functools
from typing import Any

from archscreen.core.data import DatasetSplits, load_dataset

TINY_MLP: dict[str, Any] = {
    "name": "tiny-mlp",
    "layers": ["flatten", {"linear": 32}, "relu", {"dropout": 0.1}, {"linear": 16}, "tanh"],
    "head": "classifier",
}
"""A small classifier with dropout (so the suites see a stochastic forward) that fits ``digits``."""

BAD_SPEC: dict[str, Any] = {
    "name": "bad",
    "layers": [{"conv2d": {"out": 4, "kernel": 9}}, "flatten"],
    "head": "classifier",
}
"""A 9x9 kernel on 8x8 digits: the spec error names ``layers[0].conv2d``."""


@functools.cache
def digits(train: int | None = None) -> DatasetSplits:
    """``digits`` (seed 0), its training split cut to ``train`` samples (``None``: all)."""
    d = load_dataset("digits", seed=0)
    if train is None:
        return d
    return DatasetSplits(
        info=d.info,
        x_train=d.x_train[:train],
        y_train=d.y_train[:train],
        x_val=d.x_val[:96],
        y_val=d.y_val[:96],
        x_test=d.x_test[:96],
        y_test=d.y_test[:96],
    )

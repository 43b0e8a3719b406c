"""The one NaN scrubber (store/jsonsafe.py) that epoch metrics and job results go through."""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from archscreen.store.jsonsafe import jsonable


def test_non_finite_numbers_become_null_and_scalars_plain() -> None:
    raw = {
        "loss": float("nan"),
        "best": float("inf"),
        "worst": -math.inf,
        "lr": 0.01,
        1: (np.float32(0.5), np.float64("nan"), torch.tensor(2.0), torch.tensor(float("inf"))),
        "n": np.int64(3),
        "ok": True,
        "name": "x",
        "none": None,
    }
    out = jsonable(raw)
    assert out == {
        "loss": None,
        "best": None,
        "worst": None,
        "lr": 0.01,
        "1": [0.5, None, 2.0, None],
        "n": 3,
        "ok": True,
        "name": "x",
        "none": None,
    }
    json.dumps(out, allow_nan=False)  # strict JSON
    assert jsonable(float("nan")) is None and jsonable(1.5) == 1.5 and jsonable(None) is None

"""Synthetic nonlinear regression with a known noise floor.

Data (identical for every ``seed``): 3000 samples ``x ~ N(0, I_16)``;
``y = sin(1.5 * <w, x>) + 0.25 * (<v, x>**2 - 1) + eps`` with fixed unit vectors ``w``, ``v``
and ``eps ~ N(0, 0.1**2)`` (so the best achievable test MSE is about 0.01).

Split rules: a ``seed``-dependent random partition into 70% ``train`` / 15% ``val`` /
15% ``test`` (2100 / 450 / 450). ``x`` is float32 ``(N, 16)``, ``y`` float32 ``(N, 1)``.
"""

from __future__ import annotations

import numpy as np

from ._util import check_seed, float_tensor, permutation_split
from .base import Dataset, DatasetInfo, DatasetSplits

NUM_SAMPLES = 3000
INPUT_DIM = 16
NOISE_STD = 0.1
VAL_FRACTION = 0.15
TEST_FRACTION = 0.15
_FUNCTION_SEED = 20240611  # fixes w and v
_DATA_SEED = 20240612  # fixes x and the noise


def target_function(x: np.ndarray) -> np.ndarray:
    """The noiseless target ``f(x)`` for ``x`` of shape ``(N, 16)``; returns shape ``(N, 1)``."""
    g = np.random.default_rng(_FUNCTION_SEED)
    w = g.standard_normal(INPUT_DIM)
    v = g.standard_normal(INPUT_DIM)
    w /= np.linalg.norm(w)
    v /= np.linalg.norm(v)
    f = np.sin(1.5 * (x @ w)) + 0.25 * ((x @ v) ** 2 - 1.0)
    return f[:, None]


def generate() -> tuple[np.ndarray, np.ndarray]:
    """The fixed ``(x, y)`` arrays (float64) before splitting."""
    g = np.random.default_rng(_DATA_SEED)
    x = g.standard_normal((NUM_SAMPLES, INPUT_DIM))
    y = target_function(x) + NOISE_STD * g.standard_normal((NUM_SAMPLES, 1))
    return x, y


class SyntheticRegression(Dataset):
    """16-d nonlinear regression: input ``(16,)`` float, ``target_dim`` 1, 2100/450/450 split."""

    name = "regression"

    def info(self) -> DatasetInfo:
        return DatasetInfo(
            name=self.name, task="regression", input_shape=(INPUT_DIM,), input_kind="float", target_dim=1
        )

    def load(self, seed: int = 0) -> DatasetSplits:
        """``seed``-dependent random 70/15/15 partition of the fixed 3000 samples."""
        check_seed(seed)
        x, y = generate()
        n_val = round(NUM_SAMPLES * VAL_FRACTION)
        n_test = round(NUM_SAMPLES * TEST_FRACTION)
        tr, va, te = permutation_split(NUM_SAMPLES, n_val, n_test, seed)
        return DatasetSplits(
            info=self.info(),
            x_train=float_tensor(x[tr]),
            y_train=float_tensor(y[tr]),
            x_val=float_tensor(x[va]),
            y_val=float_tensor(y[va]),
            x_test=float_tensor(x[te]),
            y_test=float_tensor(y[te]),
        )

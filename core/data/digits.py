"""scikit-learn's 8x8 handwritten digits (ships with scikit-learn, offline).

Split rules: the 1797 samples are split, stratified by class and seeded by ``seed``, into
60% ``train`` / 20% ``val`` / 20% ``test`` (1077 / 360 / 360). Pixels (0..16) are divided by 16
into [0, 1] and shaped channels-first ``(N, 1, 8, 8)``.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from ._util import check_seed, float_tensor, long_tensor, sklearn_state
from .base import Dataset, DatasetInfo, DatasetSplits

TEST_FRACTION = 0.2
VAL_FRACTION = 0.2


class Digits(Dataset):
    """Digits classification: input ``(1, 8, 8)`` float in [0, 1], 10 classes, 60/20/20 split."""

    name = "digits"

    def info(self) -> DatasetInfo:
        return DatasetInfo(
            name=self.name, task="classification", input_shape=(1, 8, 8), input_kind="float", num_classes=10
        )

    def load(self, seed: int = 0) -> DatasetSplits:
        """Stratified ``seed``-dependent 60/20/20 split of all 1797 samples."""
        check_seed(seed)
        bunch = load_digits()
        x = np.asarray(bunch.data, dtype=np.float64).reshape(-1, 1, 8, 8) / 16.0
        y = np.asarray(bunch.target, dtype=np.int64)
        idx = np.arange(len(y))
        idx_rest, idx_test = train_test_split(
            idx, test_size=TEST_FRACTION, stratify=y, random_state=sklearn_state(seed, 0)
        )
        idx_train, idx_val = train_test_split(
            idx_rest,
            test_size=VAL_FRACTION / (1.0 - TEST_FRACTION),
            stratify=y[idx_rest],
            random_state=sklearn_state(seed, 1),
        )
        idx_train, idx_val, idx_test = np.sort(idx_train), np.sort(idx_val), np.sort(idx_test)
        return DatasetSplits(
            info=self.info(),
            x_train=float_tensor(x[idx_train]),
            y_train=long_tensor(y[idx_train]),
            x_val=float_tensor(x[idx_val]),
            y_val=long_tensor(y[idx_val]),
            x_test=float_tensor(x[idx_test]),
            y_test=long_tensor(y[idx_test]),
        )

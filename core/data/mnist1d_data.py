"""MNIST-1D (Greydanus 2020), generated procedurally by the ``mnist1d`` package; never downloaded.

Split rules:
  * the data itself is the standard MNIST-1D: ``make_dataset(get_dataset_args())`` with the
    package's default generation seed (42), 4000 training and 1000 test samples of length 40;
  * ``test`` is the package's own 1000-sample test set, identical for every ``seed``;
  * the 4000 training samples are split, stratified by class and seeded by ``seed``, into
    3400 ``train`` and 600 ``val`` samples.

Features are kept as generated (the package already standardises them globally), cast to float32
and shaped channels-first ``(N, 1, 40)``.
"""

from __future__ import annotations

import functools
import random

import numpy as np
from sklearn.model_selection import train_test_split

from ._util import check_seed, float_tensor, long_tensor, sklearn_state
from .base import Dataset, DatasetError, DatasetInfo, DatasetSplits

NUM_VAL = 600
SEQ_LEN = 40
NUM_CLASSES = 10


@functools.lru_cache(maxsize=1)
def _generate() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Generate the standard MNIST-1D arrays ``(x, y, x_test, y_test)`` (about 3-5 s, cached).

    ``mnist1d`` reseeds the global ``random`` and ``numpy.random`` generators; their state is
    restored afterwards so callers' global RNG streams are unaffected.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as exc:  # pragma: no cover - mnist1d is a declared dependency
        raise DatasetError(f"mnist1d needs the 'mnist1d' package: {exc}") from exc

    py_state = random.getstate()
    np_state = np.random.get_state()
    try:
        args = get_dataset_args()  # standard dataset: default generation seed and sizes
        data = make_dataset(args)  # procedural generation; NEVER mnist1d's get_dataset (downloads)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    arrays = (
        np.asarray(data["x"], dtype=np.float32),
        np.asarray(data["y"], dtype=np.int64),
        np.asarray(data["x_test"], dtype=np.float32),
        np.asarray(data["y_test"], dtype=np.int64),
    )
    for a in arrays:
        a.setflags(write=False)
    return arrays


def clear_cache() -> None:
    """Forget the generated arrays (the next :meth:`MNIST1D.load` regenerates them)."""
    _generate.cache_clear()


class MNIST1D(Dataset):
    """MNIST-1D classification: input ``(1, 40)`` float, 10 classes, 3400/600/1000 split."""

    name = "mnist1d"

    def info(self) -> DatasetInfo:
        return DatasetInfo(
            name=self.name,
            task="classification",
            input_shape=(1, SEQ_LEN),
            input_kind="float",
            num_classes=NUM_CLASSES,
        )

    def load(self, seed: int = 0) -> DatasetSplits:
        """Stratified, ``seed``-dependent train/val split of the fixed 4000 training samples."""
        check_seed(seed)
        x, y, x_test, y_test = _generate()
        idx_train, idx_val = train_test_split(
            np.arange(len(y)), test_size=NUM_VAL, stratify=y, random_state=sklearn_state(seed)
        )
        idx_train, idx_val = np.sort(idx_train), np.sort(idx_val)
        return DatasetSplits(
            info=self.info(),
            x_train=float_tensor(x[idx_train, None, :]),
            y_train=long_tensor(y[idx_train]),
            x_val=float_tensor(x[idx_val, None, :]),
            y_val=long_tensor(y[idx_val]),
            x_test=float_tensor(x_test[:, None, :]),
            y_test=long_tensor(y_test),
        )

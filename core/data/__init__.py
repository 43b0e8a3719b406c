"""Offline dataset registry: every dataset is generated or read locally, nothing is downloaded.

Built-in datasets (see each module's docstring for its split rules):
  * ``mnist1d``    -- MNIST-1D, classification, input ``(1, 40)``, 10 classes, 3400/600/1000;
  * ``digits``     -- scikit-learn 8x8 digits, classification, input ``(1, 8, 8)``, 10 classes, 60/20/20;
  * ``chartext``   -- char-level language model on a shipped public-domain corpus, ``T = 64``, 90/5/5
    by position;
  * ``regression`` -- synthetic 16-d nonlinear regression, ``target_dim`` 1, 70/15/15.

Any path to a ``.npz`` file is a dataset too (:class:`NpzDataset`).
"""

from __future__ import annotations

from .base import Dataset, DatasetError, DatasetInfo, DatasetSplits
from .chartext import CharText
from .digits import Digits
from .mnist1d_data import MNIST1D
from .npz import NpzDataset
from .registry import available, clear_cache, get_dataset, load_dataset, register
from .regression import SyntheticRegression

__all__ = [
    "MNIST1D",
    "CharText",
    "Dataset",
    "DatasetError",
    "DatasetInfo",
    "DatasetSplits",
    "Digits",
    "NpzDataset",
    "SyntheticRegression",
    "available",
    "clear_cache",
    "get_dataset",
    "load_dataset",
    "register",
]

for _builtin in (MNIST1D(), Digits(), CharText(), SyntheticRegression()):
    register(_builtin, replace=True)
del _builtin

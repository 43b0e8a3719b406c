"""The dataset contract every archscreen dataset satisfies.

A dataset is fully materialised in memory as tensors (small, offline suites:
archscreen screens architectures, it does not stream ImageNet). Splits are
deterministic functions of ``seed``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Literal

import torch

Task = Literal["classification", "regression", "language_model"]
InputKind = Literal["float", "tokens"]


@dataclass(frozen=True)
class DatasetInfo:
    """What shape inference and the model builder need to know, without the data.

    Attributes:
        name: registry name, or the file path for a user ``.npz``.
        task: ``classification`` (one label per sample), ``regression`` (a real
            vector per sample) or ``language_model`` (one label per time step).
        input_shape: shape of ONE sample, channels first (``(1, 40)`` for
            MNIST-1D, ``(1, 8, 8)`` for digits, ``(T,)`` for token sequences).
        input_kind: ``float`` features or integer ``tokens`` (for ``embedding``).
        num_classes: classes (classification) or vocabulary size (language
            model); ``None`` for regression.
        target_dim: regression output size; ``None`` otherwise.
        vocab_size: token vocabulary for ``tokens`` input; ``None`` otherwise.
    """

    name: str
    task: Task
    input_shape: tuple[int, ...]
    input_kind: InputKind = "float"
    num_classes: int | None = None
    target_dim: int | None = None
    vocab_size: int | None = None


@dataclass(frozen=True)
class DatasetSplits:
    """Train/validation/test tensors plus their :class:`DatasetInfo`.

    ``x_*`` are float32 (``float`` input) or int64 (``tokens``); ``y_*`` are
    int64 labels (classification: ``(N,)``; language model: ``(N, T)``) or
    float32 targets ``(N, target_dim)`` (regression).
    """

    info: DatasetInfo
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.x_train), "val": len(self.x_val), "test": len(self.x_test)}


class DatasetError(ValueError):
    """A dataset name or file that cannot be used; the message is one readable line."""


class Dataset(abc.ABC):
    """A registered dataset: cheap :meth:`info`, seeded :meth:`load`.

    Contract (checked by ``tests/core/data/test_dataset_contract.py`` for every
    registered dataset):
      * ``info()`` needs no data generation and equals ``load(seed).info``;
      * ``load(seed)`` is deterministic in ``seed`` and never touches the network;
      * the three splits are non-empty and disjoint by construction;
      * tensors have the dtypes and shapes :class:`DatasetSplits` documents.
    """

    name: str

    @abc.abstractmethod
    def info(self) -> DatasetInfo: ...

    @abc.abstractmethod
    def load(self, seed: int = 0) -> DatasetSplits: ...

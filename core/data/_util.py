"""Shared helpers for the dataset implementations: seed checks, seeded splits, tensor conversion."""

from __future__ import annotations

import numpy as np
import torch

from .base import DatasetError


def check_seed(seed: int) -> int:
    """Return ``seed`` if it is a non-negative ``int``; raise :class:`DatasetError` otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DatasetError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def rng(seed: int, stream: int = 0) -> np.random.Generator:
    """A numpy generator for ``seed``; ``stream`` separates independent uses of the same seed."""
    return np.random.default_rng([check_seed(seed), stream])


def sklearn_state(seed: int, stream: int = 0) -> int:
    """A 31-bit ``random_state`` for scikit-learn derived from ``seed`` (any size of seed works)."""
    return int(rng(seed, stream).integers(2**31 - 1))


def permutation_split(
    n: int, n_val: int, n_test: int, seed: int, stream: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded random partition of ``range(n)`` into (train, val, test) index arrays.

    Each index array is sorted so that the original sample order is kept inside a split.
    """
    if n_val < 0 or n_test < 0 or n - n_val - n_test < 1:
        raise DatasetError(f"cannot split {n} samples into {n_val} validation and {n_test} test samples")
    perm = rng(seed, stream).permutation(n)
    val = np.sort(perm[:n_val])
    test = np.sort(perm[n_val : n_val + n_test])
    train = np.sort(perm[n_val + n_test :])
    return train, val, test


def float_tensor(a: np.ndarray) -> torch.Tensor:
    """A float32 CPU tensor owning a contiguous copy of ``a``."""
    return torch.from_numpy(np.array(a, dtype=np.float32, copy=True, order="C"))


def long_tensor(a: np.ndarray) -> torch.Tensor:
    """An int64 CPU tensor owning a contiguous copy of ``a``."""
    return torch.from_numpy(np.array(a, dtype=np.int64, copy=True, order="C"))

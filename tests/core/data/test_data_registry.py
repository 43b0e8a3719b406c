"""Registry look-ups, the load_dataset LRU, and registering a custom dataset."""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from archscreen.core.data import (
    Dataset,
    DatasetError,
    DatasetInfo,
    DatasetSplits,
    available,
    get_dataset,
    load_dataset,
    register,
)
from archscreen.core.data import registry as reg


def test_builtins_are_registered() -> None:
    assert available() == ["chartext", "digits", "mnist1d", "regression"]


def test_unknown_name_lists_known_datasets() -> None:
    with pytest.raises(DatasetError, match=r"unknown dataset 'nope'") as err:
        get_dataset("nope")
    for name in available():
        assert re.search(rf"\b{name}\b", str(err.value))
    assert "\n" not in str(err.value)


def test_load_dataset_is_cached_per_name_and_seed_with_lru_eviction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reg, "_CACHE", OrderedDict())  # isolated, and keeps other tests' cached data
    a = load_dataset("regression", seed=0)
    assert load_dataset("regression", seed=0) is a
    b = load_dataset("regression", seed=1)
    assert b is not a
    for seed in range(2, 2 + reg.CACHE_SIZE):  # push seed 0 out of the LRU
        load_dataset("regression", seed=seed)
    again = load_dataset("regression", seed=0)
    assert again is not a
    assert torch.equal(again.x_train, a.x_train)


def test_npz_cache_notices_a_rewritten_file(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.ones((20, 2)), y_train=np.zeros(20, dtype=int))
    first = load_dataset(str(path))
    assert first.info.input_shape == (2,)
    np.savez(path, x_train=np.ones((20, 3)), y_train=np.zeros(20, dtype=int))
    assert load_dataset(str(path)).info.input_shape == (3,)


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_bad_seed_is_a_dataset_error(seed: object) -> None:
    with pytest.raises(DatasetError, match="seed must be a non-negative integer"):
        load_dataset("digits", seed=seed)  # type: ignore[arg-type]


class _Tiny(Dataset):
    name = "tiny"

    def info(self) -> DatasetInfo:
        return DatasetInfo(name=self.name, task="regression", input_shape=(1,), target_dim=1)

    def load(self, seed: int = 0) -> DatasetSplits:
        t = torch.full((2, 1), float(seed))
        return DatasetSplits(self.info(), t, t, t, t, t, t)


def test_register_custom_dataset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reg, "_REGISTRY", dict(reg._REGISTRY))
    ds = register(_Tiny())
    assert "tiny" in available() and get_dataset("tiny") is ds
    assert float(load_dataset("tiny", seed=3).x_train[0, 0]) == 3.0
    with pytest.raises(DatasetError, match="already registered"):
        register(_Tiny())
    register(_Tiny(), replace=True)
    bad = _Tiny()
    bad.name = "oops.npz"
    with pytest.raises(DatasetError, match="looks like a file path"):
        register(bad)

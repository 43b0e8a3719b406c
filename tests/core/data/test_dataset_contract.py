"""The Dataset contract (archscreen.testing.DatasetContract) for every registered dataset and .npz layouts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from archscreen.core.data import Dataset, NpzDataset, available, get_dataset
from archscreen.testing import DatasetContract

NPZ_CASES = ("npz-classification", "npz-regression", "npz-lm")
CASES = [*available(), *NPZ_CASES]

# (train, val, test) sizes each dataset must produce; None = not pinned here.
EXPECTED_SIZES: dict[str, tuple[int, int, int] | None] = {
    "mnist1d": (3400, 600, 1000),
    "digits": (1077, 360, 360),
    "regression": (2100, 450, 450),
    "chartext": None,
    "npz-classification": (140, 30, 30),
    "npz-regression": (72, 13, 15),
    "npz-lm": (68, 20, 12),
}


def _write_npz(directory: Path, case: str) -> Path:
    g = np.random.default_rng(123)
    path = directory / f"{case}.npz"
    if case == "npz-classification":  # no val/test: both carved from train by seed
        np.savez(path, x_train=g.normal(size=(200, 3, 5)), y_train=g.integers(0, 4, size=200))
    elif case == "npz-regression":  # float64 x (N, 6), 1-D float y; test given, val carved from train
        np.savez_compressed(
            path,
            x_train=g.normal(size=(85, 6)),
            y_train=g.normal(size=85),
            x_test=g.normal(size=(15, 6)),
            y_test=g.normal(size=15),
        )
    elif case == "npz-lm":  # int32 tokens (N, T) with next-token targets; val given, test carved
        tokens = g.integers(0, 7, size=(100, 9), dtype=np.int32)
        np.savez(
            path,
            x_train=tokens[:80, :8],
            y_train=tokens[:80, 1:],
            x_val=tokens[80:, :8],
            y_val=tokens[80:, 1:],
        )
    else:  # pragma: no cover
        raise AssertionError(case)
    return path


BUILTINS_CARVING_VAL = ("mnist1d", "digits", "regression")


def _case_of(ds: Dataset) -> str:
    return next(c for c in CASES if c == ds.name or (c in NPZ_CASES and ds.name.endswith(f"{c}.npz")))


class TestDatasetContract(DatasetContract):
    """Every registered dataset and three .npz layouts through the importable contract."""

    @pytest.fixture(scope="class", params=CASES)
    @classmethod
    def contract_dataset(
        cls, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Dataset:
        case: str = request.param
        if case in NPZ_CASES:
            return NpzDataset(_write_npz(tmp_path_factory.mktemp("npz_contract"), case))
        return get_dataset(case)

    @pytest.fixture(scope="class")
    @classmethod
    def contract_expected_sizes(cls, contract_dataset: Dataset) -> tuple[int, int, int] | None:
        return EXPECTED_SIZES[_case_of(contract_dataset)]

    def val_moves_with_seed(self, dataset: Dataset) -> bool:
        return dataset.name in BUILTINS_CARVING_VAL


def test_every_case_is_covered() -> None:
    """A newly registered dataset joins the contract (and needs its sizes pinned or None here)."""
    assert set(CASES) == set(EXPECTED_SIZES)

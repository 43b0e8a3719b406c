"""The Dataset contract (core/data/base.py), checked for every registered dataset and for .npz files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from archscreen.core.data import CharText, Dataset, DatasetSplits, NpzDataset, available, get_dataset

NPZ_CASES = ("npz-classification", "npz-regression", "npz-lm")
CASES = [*available(), *NPZ_CASES]
SPLITS = ("train", "val", "test")

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


_LOADED: dict[str, tuple[Dataset, DatasetSplits, DatasetSplits, DatasetSplits]] = {}


@pytest.fixture(scope="module")
def npz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("npz_contract")


@pytest.fixture
def loaded(
    request: pytest.FixtureRequest, npz_dir: Path
) -> tuple[Dataset, DatasetSplits, DatasetSplits, DatasetSplits]:
    """(dataset, load(0), load(0) again, load(1)), computed once per case for the module."""
    case: str = request.param
    if case not in _LOADED:
        ds = NpzDataset(_write_npz(npz_dir, case)) if case in NPZ_CASES else get_dataset(case)
        _LOADED[case] = (ds, ds.load(0), ds.load(0), ds.load(1))
    return _LOADED[case]


def _tensors(s: DatasetSplits) -> dict[str, torch.Tensor]:
    return {f"{v}_{k}": getattr(s, f"{v}_{k}") for k in SPLITS for v in ("x", "y")}


def _row_set(x: torch.Tensor) -> set[bytes]:
    a = x.reshape(len(x), -1).numpy()
    return {row.tobytes() for row in a}


@pytest.mark.parametrize("loaded", CASES, indirect=True)
class TestDatasetContract:
    def test_info_is_cheap_and_matches_load(self, loaded: tuple[Dataset, ...]) -> None:
        ds, s0, _, s1 = loaded
        assert ds.info() == s0.info == s1.info
        assert s0.info.name == ds.name

    def test_same_seed_gives_identical_tensors(self, loaded: tuple[Dataset, ...]) -> None:
        _, s0, s0b, _ = loaded
        a, b = _tensors(s0), _tensors(s0b)
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key

    def test_seed_moves_the_train_val_split(self, loaded: tuple[Dataset, ...]) -> None:
        ds, s0, _, s1 = loaded
        if isinstance(ds, CharText):  # documented: positional split, seed-independent
            assert torch.equal(s0.x_val, s1.x_val) and torch.equal(s0.x_train, s1.x_train)
            return
        assert s0.sizes() == s1.sizes()
        assert not torch.equal(s0.x_train, s1.x_train)
        # a split carved out of train moves with the seed (a split given in an .npz file does not)
        assert not (torch.equal(s0.x_val, s1.x_val) and torch.equal(s0.x_test, s1.x_test))
        if ds.name in ("mnist1d", "digits", "regression"):
            assert not torch.equal(s0.x_val, s1.x_val)

    def test_splits_non_empty_with_expected_sizes(self, loaded: tuple[Dataset, ...]) -> None:
        ds, s0, _, _ = loaded
        sizes = s0.sizes()
        for k in SPLITS:
            assert sizes[k] > 0
            assert len(getattr(s0, f"x_{k}")) == len(getattr(s0, f"y_{k}")) == sizes[k]
        case = next(c for c in CASES if c == ds.name or (c in NPZ_CASES and ds.name.endswith(f"{c}.npz")))
        expected = EXPECTED_SIZES[case]
        if expected is not None:
            assert (sizes["train"], sizes["val"], sizes["test"]) == expected

    def test_dtypes_and_shapes(self, loaded: tuple[Dataset, ...]) -> None:
        _, s, _, _ = loaded
        info = s.info
        for k in SPLITS:
            x, y = getattr(s, f"x_{k}"), getattr(s, f"y_{k}")
            n = len(x)
            assert x.device.type == "cpu" and y.device.type == "cpu"
            assert tuple(x.shape) == (n, *info.input_shape), k
            if info.input_kind == "float":
                assert x.dtype == torch.float32 and torch.isfinite(x).all()
                assert info.vocab_size is None
            else:
                assert info.input_kind == "tokens" and x.dtype == torch.int64
                assert info.vocab_size is not None
                assert int(x.min()) >= 0 and int(x.max()) < info.vocab_size
            if info.task == "classification":
                assert info.num_classes is not None and info.target_dim is None
                assert y.dtype == torch.int64 and tuple(y.shape) == (n,)
                assert int(y.min()) >= 0 and int(y.max()) < info.num_classes
            elif info.task == "language_model":
                assert info.num_classes == info.vocab_size and info.target_dim is None
                assert y.dtype == torch.int64 and tuple(y.shape) == (n, *info.input_shape)
                assert int(y.min()) >= 0 and int(y.max()) < info.num_classes
            else:
                assert info.task == "regression" and info.num_classes is None
                assert info.target_dim is not None
                assert y.dtype == torch.float32 and tuple(y.shape) == (n, info.target_dim)
                assert torch.isfinite(y).all()
        if info.task == "classification":  # every class is seen in training
            assert int(s.y_train.max()) + 1 == info.num_classes

    def test_splits_are_disjoint(self, loaded: tuple[Dataset, ...]) -> None:
        ds, s, _, _ = loaded
        if isinstance(ds, CharText):
            _check_chartext_contiguity(ds, s)
            return
        rows = {k: _row_set(getattr(s, f"x_{k}")) for k in SPLITS}
        for k in SPLITS:  # the source rows are unique, so a shared row means a leaked sample
            assert len(rows[k]) == s.sizes()[k], f"duplicate rows inside {k}"
        assert not rows["train"] & rows["val"]
        assert not rows["train"] & rows["test"]
        assert not rows["val"] & rows["test"]


def _check_chartext_contiguity(ds: CharText, s: DatasetSplits) -> None:
    """Windows are consecutive within each split, and train < val < test by text position."""
    text = ds.text()
    start = 0
    for k in SPLITS:
        x, y = getattr(s, f"x_{k}"), getattr(s, f"y_{k}")
        assert torch.equal(x[:, 1:], y[:, :-1]), f"{k}: targets are not the next characters"
        assert torch.equal(x[1:, 0], y[:-1, -1]), f"{k}: windows are not consecutive"
        span = ds.decode(x.reshape(-1).tolist()) + ds.decode([int(y[-1, -1])])
        pos = text.find(span, start)
        assert pos >= start, f"{k} text does not follow the previous split"
        if k == "train":
            assert pos == 0
        start = pos + len(span)  # the next split starts at or after this split's last target

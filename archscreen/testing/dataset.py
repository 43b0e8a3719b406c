"""The contract every :class:`~archscreen.core.data.Dataset` passes (``core/data/base.py``)."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

from archscreen.core.data import CharText, Dataset, DatasetSplits

__all__ = ["DatasetContract"]

SPLITS = ("train", "val", "test")
Loaded = tuple[Dataset, DatasetSplits, DatasetSplits, DatasetSplits]


def _tensors(s: DatasetSplits) -> dict[str, torch.Tensor]:
    return {f"{v}_{k}": getattr(s, f"{v}_{k}") for k in SPLITS for v in ("x", "y")}


def _row_set(x: torch.Tensor) -> set[bytes]:
    a = x.reshape(len(x), -1).numpy()
    return {row.tobytes() for row in a}


class DatasetContract:
    """Cheap ``info()`` equal to the loaded one; same seed, same tensors; the seed moves the
    train/val split; non-empty splits (of ``expected_sizes`` when given); dtypes and shapes per
    task; disjoint splits (character text: consecutive windows in text order).

    Subclass with ``dataset = MyDataset(...)`` (and optionally ``expected_sizes = (train, val,
    test)``), or override the class-scoped ``contract_dataset`` fixture. Each dataset is loaded
    three times per class (seed 0 twice, seed 1).
    """

    dataset: ClassVar[Dataset]
    expected_sizes: ClassVar[tuple[int, int, int] | None] = None

    @pytest.fixture(scope="class")
    @classmethod
    def contract_dataset(cls) -> Dataset:
        return cls.dataset

    @pytest.fixture(scope="class")
    @classmethod
    def contract_expected_sizes(cls) -> tuple[int, int, int] | None:
        return cls.expected_sizes

    def val_moves_with_seed(self, dataset: Dataset) -> bool:
        """Whether the validation split alone must move with the seed (it is carved out of
        train); default: not required (only train and (val or test) must move)."""
        return False

    @pytest.fixture(scope="class")
    @classmethod
    def loaded(cls, contract_dataset: Dataset) -> Loaded:
        """(dataset, load(0), load(0) again, load(1)), loaded once for the class."""
        ds = contract_dataset
        return (ds, ds.load(0), ds.load(0), ds.load(1))

    def test_info_is_cheap_and_matches_load(self, loaded: Loaded) -> None:
        ds, s0, _, s1 = loaded
        assert ds.info() == s0.info == s1.info
        assert s0.info.name == ds.name

    def test_same_seed_gives_identical_tensors(self, loaded: Loaded) -> None:
        _, s0, s0b, _ = loaded
        a, b = _tensors(s0), _tensors(s0b)
        for key in a:
            assert a[key].dtype == b[key].dtype and torch.equal(a[key], b[key]), key

    def test_seed_moves_the_train_val_split(self, loaded: Loaded) -> None:
        ds, s0, _, s1 = loaded
        if isinstance(ds, CharText):  # documented: positional split, seed-independent
            assert torch.equal(s0.x_val, s1.x_val) and torch.equal(s0.x_train, s1.x_train)
            return
        assert s0.sizes() == s1.sizes()
        assert not torch.equal(s0.x_train, s1.x_train)
        # a split carved out of train moves with the seed (a split given in an .npz file does not)
        assert not (torch.equal(s0.x_val, s1.x_val) and torch.equal(s0.x_test, s1.x_test))
        if self.val_moves_with_seed(ds):
            assert not torch.equal(s0.x_val, s1.x_val)

    def test_splits_non_empty_with_expected_sizes(
        self, loaded: Loaded, contract_expected_sizes: tuple[int, int, int] | None
    ) -> None:
        _, s0, _, _ = loaded
        sizes = s0.sizes()
        for k in SPLITS:
            assert sizes[k] > 0
            assert len(getattr(s0, f"x_{k}")) == len(getattr(s0, f"y_{k}")) == sizes[k]
        expected = contract_expected_sizes
        if expected is not None:
            assert (sizes["train"], sizes["val"], sizes["test"]) == expected

    def test_dtypes_and_shapes(self, loaded: Loaded) -> None:
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
                assert info.num_classes is not None and info.target_dim is None
                assert info.num_classes == info.vocab_size
                assert y.dtype == torch.int64 and tuple(y.shape) == (n, *info.input_shape)
                assert int(y.min()) >= 0 and int(y.max()) < info.num_classes
            else:
                assert info.task == "regression" and info.num_classes is None
                assert info.target_dim is not None
                assert y.dtype == torch.float32 and tuple(y.shape) == (n, info.target_dim)
                assert torch.isfinite(y).all()
        if info.task == "classification":  # every class is seen in training
            assert int(s.y_train.max()) + 1 == info.num_classes

    def test_splits_are_disjoint(self, loaded: Loaded) -> None:
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

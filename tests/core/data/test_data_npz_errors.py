"""Bad .npz files fail with one readable DatasetError line each."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from archscreen.core.data import DatasetError, NpzDataset, get_dataset

X = np.random.default_rng(0).normal(size=(20, 4))
Y = np.arange(20) % 3


def _savez(**arrays: Any) -> Callable[[Path], None]:
    return lambda p: np.savez(p, **arrays)


def _text(p: Path) -> None:
    p.write_text("definitely not a zip archive\n")


def _garbage_member(p: Path) -> None:
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("x_train.npy", b"garbage, not an npy header")
        zf.writestr("y_train.npy", b"garbage, not an npy header")


def _nan(value: float) -> Callable[[Path], None]:
    x = X.copy()
    x[3, 1] = value
    return _savez(x_train=x, y_train=Y)


# (case id, writer (None: no file), NpzDataset kwargs, message regex)
BAD_FILES: list[tuple[str, Callable[[Path], None] | None, dict[str, Any], str]] = [
    ("file-not-found", None, {}, r"npz file not found"),
    ("not-a-zip", _text, {}, r"not an \.npz archive"),
    ("too-large", _savez(x_train=X, y_train=Y), {"max_bytes": 100}, r"over the 100-byte limit"),
    ("missing-y-train", _savez(x_train=X), {}, r"missing required key\(s\) y_train; found keys: x_train"),
    ("missing-both", _savez(features=X), {}, r"missing required key\(s\) x_train, y_train"),
    ("length-mismatch", _savez(x_train=X, y_train=Y[:-1]), {}, r"x_train has 20 samples but y_train has 19"),
    ("string-labels", _savez(x_train=X, y_train=np.array(["a"] * 20)), {}, r"y_train has non-numeric dtype"),
    ("complex-x", _savez(x_train=X.astype(complex), y_train=Y), {}, r"x_train has non-numeric dtype"),
    (
        "object-array",
        _savez(x_train=np.array([[1.0], [2, 3]], dtype=object), y_train=Y[:2]),
        {},
        r"object array",
    ),
    ("nan-in-x", _nan(np.nan), {}, r"x_train contains NaN or inf"),
    ("inf-in-x", _nan(np.inf), {}, r"x_train contains NaN or inf"),
    ("empty", _savez(x_train=np.zeros((0, 4)), y_train=np.zeros(0, dtype=int)), {}, r"x_train is empty"),
    ("val-without-y-val", _savez(x_train=X, y_train=Y, x_val=X), {}, r"x_val given without y_val"),
    ("y-test-without-x", _savez(x_train=X, y_train=Y, y_test=Y), {}, r"y_test given without x_test"),
    ("negative-label", _savez(x_train=X, y_train=Y - 1), {}, r"class labels must be >= 0"),
    ("val-shape", _savez(x_train=X, y_train=Y, x_val=X[:, :3], y_val=Y), {}, r"x_val has per-sample shape"),
    ("int-y-2d", _savez(x_train=X, y_train=np.zeros((20, 2), dtype=int)), {}, r"integer y_train of shape"),
    ("too-few-to-split", _savez(x_train=X[:1], y_train=Y[:1]), {}, r"too few to carve out"),
    ("corrupt-member", _garbage_member, {}, r"cannot read x_train"),
    (
        "negative-token",
        _savez(x_train=-np.ones((5, 3), dtype=int), y_train=np.ones((5, 3), dtype=int)),
        {},
        r"token ids must be >= 0",
    ),
]


@pytest.mark.parametrize(
    ("writer", "kwargs", "pattern"), [c[1:] for c in BAD_FILES], ids=[c[0] for c in BAD_FILES]
)
def test_bad_npz_raises_one_line_dataset_error(
    tmp_path: Path, writer: Callable[[Path], None] | None, kwargs: dict[str, Any], pattern: str
) -> None:
    path = tmp_path / "data.npz"
    if writer is not None:
        writer(path)
    ds = NpzDataset(path, **kwargs)
    with pytest.raises(DatasetError, match=pattern) as err:
        ds.load(0)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    with pytest.raises(DatasetError, match=pattern):  # info() validates the same way
        ds.info()


def test_get_dataset_reports_a_missing_npz_path(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"npz file not found"):
        get_dataset(str(tmp_path / "absent.npz"))


def test_npz_task_inference_and_reshape(tmp_path: Path) -> None:
    path = tmp_path / "ok.npz"
    np.savez(path, x_train=np.arange(30, dtype=np.float64), y_train=np.linspace(0, 1, 30))
    ds = get_dataset(str(path))
    assert isinstance(ds, NpzDataset)
    s = ds.load(0)
    assert s.info.name == str(path)
    assert (s.info.task, s.info.input_shape, s.info.target_dim) == ("regression", (1,), 1)
    assert tuple(s.y_train.shape) == (len(s.x_train), 1)
    # the carved-out splits partition the file's samples exactly
    seen = sorted(float(v) for part in (s.x_train, s.x_val, s.x_test) for v in part.reshape(-1))
    assert seen == [float(v) for v in range(30)]


@pytest.mark.parametrize("given", [(), ("val",), ("val", "test")])
def test_class_counts_from_the_labels_match_the_loaded_splits(tmp_path: Path, given: tuple[str, ...]) -> None:
    """What the upload reports (no tensors built) is what a run with seed 0 trains and tests on,
    whether val/test are given or carved from train."""
    rng = np.random.default_rng(1)
    arrays = {"x_train": rng.normal(size=(90, 3)).astype(np.float32), "y_train": rng.integers(0, 4, 90)}
    for split in given:
        arrays[f"x_{split}"] = rng.normal(size=(20, 3)).astype(np.float32)
        arrays[f"y_{split}"] = rng.integers(0, 4, 20)
    np.savez(tmp_path / "d.npz", **arrays)  # type: ignore[arg-type]
    ds = NpzDataset(tmp_path / "d.npz")
    splits = ds.load(seed=0)
    loaded = {
        s: np.bincount(getattr(splits, f"y_{s}").numpy(), minlength=4).tolist()
        for s in ("train", "val", "test")
    }
    assert ds.class_counts() == loaded
    assert {s: sum(c) for s, c in loaded.items()} == ds.split_sizes()

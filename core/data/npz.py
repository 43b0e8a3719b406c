"""User datasets stored as ``.npz`` archives (``numpy.savez`` / ``savez_compressed``).

Keys: ``x_train`` and ``y_train`` (required); ``x_val``/``y_val`` and ``x_test``/``y_test``
(optional, each pair all-or-nothing). Other keys are ignored. The file is read with
``allow_pickle=False``: object arrays are rejected, nothing in the file is executed.

Split rules: provided splits are used as they are. A missing validation split is carved out
of ``train`` as 15% of its samples, a missing test split likewise as another 15% (both from the
original ``train`` size, at least one sample each), by a random partition seeded by ``seed``;
the remaining samples stay in ``train``, in file order.

Task inference:
  * integer ``x`` and integer ``y`` of the same 2-D shape ``(N, T)``: ``language_model`` with
    ``tokens`` input ``(T,)`` and ``vocab_size = num_classes = max(x, y) + 1``;
  * integer (or bool) 1-D ``y``: ``classification``, ``num_classes = max label + 1``;
  * float ``y``: ``regression``; 1-D ``y`` becomes ``(N, 1)``, 2-D ``(N, D)`` gives ``target_dim = D``.
Non-token ``x`` is cast to float32 and keeps its per-sample shape as ``input_shape`` (1-D ``x`` is
treated as one feature, ``(1,)``). Every problem raises :class:`DatasetError` with a one-line message.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import torch

from ._util import check_seed, float_tensor, long_tensor, permutation_split
from .base import Dataset, DatasetError, DatasetInfo, DatasetSplits, Task
from .images import IMAGE_STATE_KIND, normalise_images
from .preprocess import read_state

DEFAULT_MAX_BYTES = 512 * 2**20
VAL_FRACTION = 0.15
TEST_FRACTION = 0.15
MAX_CLASSES = 2**24
SPLITS = ("train", "val", "test")
KEYS = tuple(f"{v}_{s}" for s in SPLITS for v in ("x", "y"))


def check_contiguous_ids(labels: list[np.ndarray], where: str) -> None:
    """Class ids must be 0..K-1 with each one used: ``{0, 1, 2, 5000000}`` is 4 classes with sparse
    ids, not 5,000,001 classes (a head that wide would not fit in memory). Refused, not remapped:
    a silent renumbering would change what a prediction means; string labels in a table are
    mapped to ids for the user (sorted, returned as ``classes``)."""
    used = np.unique(np.concatenate([np.asarray(y).ravel() for y in labels]))
    top = int(used[-1])
    if len(used) == top + 1:
        return
    missing = np.setdiff1d(np.arange(min(top + 1, len(used) + 6)), used)[:5]
    raise DatasetError(
        f"{where} holds {len(used):,} distinct class ids up to {top:,} (missing "
        f"{', '.join(str(int(m)) for m in missing)}...); class ids must be contiguous, 0 to K-1: "
        "renumber them, or give the classes as strings (mapped to ids in sorted order)"
    )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class NpzDataset(Dataset):
    """A user ``.npz`` file; ``name`` and ``info().name`` are the path string as given.

    Args:
        path: the ``.npz`` file.
        max_bytes: refuse files larger than this, on disk or uncompressed (default 512 MiB).
    """

    def __init__(self, path: str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.path = os.fspath(path)
        self.name = self.path
        self.max_bytes = max_bytes
        self._cached: tuple[tuple[int, int], dict[str, np.ndarray], DatasetInfo] | None = None

    # ------------------------------------------------------------------ reading
    def _fail(self, msg: str) -> DatasetError:
        return DatasetError(f"{self.path}: {msg}")

    def _stat(self) -> tuple[int, int]:
        p = Path(self.path)
        if not p.is_file():
            raise self._fail("npz file not found")
        st = p.stat()
        return st.st_mtime_ns, st.st_size

    def _read(self, size: int) -> dict[str, np.ndarray]:
        if size > self.max_bytes:
            raise self._fail(f"file is {size} bytes, over the {self.max_bytes}-byte limit")
        if not zipfile.is_zipfile(self.path):
            raise self._fail("not an .npz archive (not a zip file)")
        try:
            with zipfile.ZipFile(self.path) as zf:
                unpacked = sum(i.file_size for i in zf.infolist())
            if unpacked > self.max_bytes:
                raise self._fail(f"archive unpacks to {unpacked} bytes, over the {self.max_bytes}-byte limit")
            arrays: dict[str, np.ndarray] = {}
            with np.load(self.path, allow_pickle=False) as npz:
                found = set(npz.files)
                missing = [k for k in ("x_train", "y_train") if k not in found]
                if missing:
                    raise self._fail(
                        f"missing required key(s) {', '.join(missing)}; found keys: "
                        f"{', '.join(sorted(found)) or '(none)'}"
                    )
                for key in KEYS:
                    if key not in found:
                        continue
                    try:
                        value = npz[key]
                    except ValueError as exc:
                        if "pickle" in str(exc).lower() or "object" in str(exc).lower():
                            raise self._fail(
                                f"{key} is an object array (pickled data is not allowed)"
                            ) from exc
                        raise self._fail(f"cannot read {key}: {_one_line(exc)}") from exc
                    if not isinstance(value, np.ndarray):  # a zip member that is not a .npy file
                        raise self._fail(f"cannot read {key}: archive member is not a .npy array")
                    arrays[key] = value
        except DatasetError:
            raise
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, KeyError) as exc:
            raise self._fail(f"cannot read npz archive: {_one_line(exc)}") from exc
        return arrays

    # --------------------------------------------------------------- validation
    def _validate(self, arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], DatasetInfo]:
        present = self._check_arrays(arrays)
        xt, yt = arrays["x_train"], arrays["y_train"]
        x_int, y_int = xt.dtype.kind in "biu", yt.dtype.kind in "biu"

        task: Task
        num_classes = target_dim = vocab_size = None
        if x_int and y_int and xt.ndim == 2 and yt.ndim == 2 and xt.shape[1:] == yt.shape[1:]:
            task = "language_model"
            keys = list(arrays)
            if min(int(arrays[k].min()) for k in keys) < 0:
                raise self._fail("token ids must be >= 0")
            vocab_size = num_classes = max(int(arrays[k].max()) for k in keys) + 1
        elif y_int and yt.ndim == 1:
            task = "classification"
            num_classes = self._class_count({s: arrays[f"y_{s}"] for s in present})
        elif y_int:
            raise self._fail(
                f"integer y_train of shape {yt.shape}: expected (N,) class labels, or (N, T) next-token "
                "targets with integer x_train of the same shape"
            )
        else:
            task = "regression"
            if yt.ndim > 2:
                raise self._fail(f"float y_train of shape {yt.shape}: expected (N,) or (N, D) targets")
            target_dim = 1 if yt.ndim == 1 else yt.shape[1]
        if num_classes is not None and num_classes > MAX_CLASSES:
            raise self._fail(f"ids go up to {num_classes - 1}; expected contiguous ids below {MAX_CLASSES}")

        out: dict[str, np.ndarray] = {}
        for key, a in arrays.items():
            if key.startswith("x"):
                if task == "language_model":
                    out[key] = a.astype(np.int64, copy=False)
                else:
                    out[key] = a.astype(np.float32, copy=False).reshape(len(a), -1) if a.ndim == 1 else a
            elif task == "regression":
                out[key] = a.reshape(len(a), -1) if a.ndim == 1 else a
            else:
                out[key] = a.astype(np.int64, copy=False)
        n_val, n_test = self._carved_sizes(out)
        if len(out["x_train"]) - n_val - n_test < 1:
            raise self._fail(
                f"x_train has only {len(out['x_train'])} samples: too few to carve out the missing "
                "validation/test split"
            )
        input_shape = tuple(int(d) for d in out["x_train"].shape[1:])
        info = DatasetInfo(
            name=self.name,
            task=task,
            input_shape=input_shape,
            input_kind="tokens" if task == "language_model" else "float",
            num_classes=num_classes,
            target_dim=target_dim,
            vocab_size=vocab_size,
        )
        return out, info

    def _check_arrays(self, arrays: dict[str, np.ndarray]) -> list[str]:
        """The per-array rules (numeric, non-empty, finite, x/y given in pairs of equal length, each
        split shaped like train); returns the splits present."""
        for split in ("val", "test"):
            has_x, has_y = f"x_{split}" in arrays, f"y_{split}" in arrays
            if has_x != has_y:
                given, absent = (f"x_{split}", f"y_{split}") if has_x else (f"y_{split}", f"x_{split}")
                raise self._fail(f"{given} given without {absent}")
        for key, a in arrays.items():
            allowed = "biuf"
            if a.dtype.kind not in allowed:
                raise self._fail(f"{key} has non-numeric dtype {a.dtype} (need integer, bool or float)")
            if a.ndim == 0:
                raise self._fail(f"{key} is a scalar; expected an array with a leading sample axis")
            if a.size == 0:
                raise self._fail(f"{key} is empty (shape {a.shape})")
            if a.dtype.kind == "f" and not np.isfinite(a).all():
                raise self._fail(f"{key} contains NaN or inf")
        present = [s for s in SPLITS if f"x_{s}" in arrays]
        for s in present:
            nx, ny = len(arrays[f"x_{s}"]), len(arrays[f"y_{s}"])
            if nx != ny:
                raise self._fail(f"x_{s} has {nx} samples but y_{s} has {ny}")
        xt, yt = arrays["x_train"], arrays["y_train"]
        for s in present[1:]:
            for v, ref in (("x", xt), ("y", yt)):
                a = arrays[f"{v}_{s}"]
                if a.shape[1:] != ref.shape[1:]:
                    raise self._fail(
                        f"{v}_{s} has per-sample shape {a.shape[1:]} but {v}_train has {ref.shape[1:]}"
                    )
                if (a.dtype.kind in "biu") != (ref.dtype.kind in "biu"):
                    raise self._fail(f"{v}_{s} dtype {a.dtype} is not the same kind as {v}_train {ref.dtype}")
        return present

    def _class_count(self, labels: dict[str, np.ndarray]) -> int:
        """K of labels that must be the contiguous ids 0..K-1 (split name → its ``y``)."""
        ys = list(labels.values())
        if min(int(y.min()) for y in ys) < 0:
            raise self._fail("class labels must be >= 0")
        try:
            check_contiguous_ids(ys, "y_" + "/y_".join(labels))
        except DatasetError as exc:
            raise self._fail(str(exc)) from None
        return max(int(y.max()) for y in ys) + 1

    @staticmethod
    def _carved_sizes(arrays: dict[str, np.ndarray]) -> tuple[int, int]:
        """How many train samples become val and test: 15% each when that split is absent, else 0."""
        n = len(arrays["x_train"])
        n_val = 0 if "x_val" in arrays else max(1, round(n * VAL_FRACTION))
        n_test = 0 if "x_test" in arrays else max(1, round(n * TEST_FRACTION))
        return n_val, n_test

    def split_sizes(self) -> dict[str, int]:
        """Samples per split after carving (what :meth:`load` gives), without building tensors."""
        arrays = self._arrays()[0]
        n_val, n_test = self._carved_sizes(arrays)
        return {
            "train": len(arrays["x_train"]) - n_val - n_test,
            "val": n_val or len(arrays["x_val"]),
            "test": n_test or len(arrays["x_test"]),
        }

    def class_counts(self, seed: int = 0) -> dict[str, list[int]]:
        """Samples per class in each split (what :meth:`load` with ``seed`` gives), from the labels
        alone: like :meth:`split_sizes`, no feature tensors are built. For a classification file."""
        arrays, info = self._arrays()
        y = arrays["y_train"].ravel()
        parts: dict[str, np.ndarray] = {"train": y}
        n_val, n_test = self._carved_sizes(arrays)
        if n_val or n_test:
            tr, va, te = permutation_split(len(y), n_val, n_test, seed)
            parts = {"train": y[tr]} | ({"val": y[va]} if n_val else {}) | ({"test": y[te]} if n_test else {})
        for s in ("val", "test"):
            if s not in parts:
                parts[s] = arrays[f"y_{s}"].ravel()
        k = info.num_classes or 0
        return {s: np.bincount(ys.astype(np.int64), minlength=k).tolist() for s, ys in parts.items()}

    def _arrays(self) -> tuple[dict[str, np.ndarray], DatasetInfo]:
        stamp = self._stat()
        if self._cached is None or self._cached[0] != stamp:
            arrays, info = self._validate(self._read(stamp[1]))
            self._cached = (stamp, arrays, info)
        return self._cached[1], self._cached[2]

    # ---------------------------------------------------------------- contract
    def info(self) -> DatasetInfo:
        """Reads and validates the file (no splitting); raises :class:`DatasetError` on a bad file."""
        return self._arrays()[1]

    def load(self, seed: int = 0) -> DatasetSplits:
        """Provided splits as-is; missing val/test carved from train (15% each), seeded by ``seed``."""
        check_seed(seed)
        arrays, info = self._arrays()
        x, y = arrays["x_train"], arrays["y_train"]
        parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        n_val, n_test = self._carved_sizes(arrays)
        if n_val or n_test:
            tr, va, te = permutation_split(len(x), n_val, n_test, seed)
            parts["train"] = (x[tr], y[tr])
            if n_val:
                parts["val"] = (x[va], y[va])
            if n_test:
                parts["test"] = (x[te], y[te])
        else:
            parts["train"] = (x, y)
        for s in ("val", "test"):
            if s not in parts:
                parts[s] = (arrays[f"x_{s}"], arrays[f"y_{s}"])

        state = read_state(str(self.path))
        images = state if state is not None and state.get("kind") == IMAGE_STATE_KIND else None

        def xt(a: np.ndarray) -> torch.Tensor:
            if images is not None:  # an image upload's pixels, normalised as its exported model does
                return float_tensor(normalise_images(a, images))
            return long_tensor(a) if info.input_kind == "tokens" else float_tensor(a)

        def yt(a: np.ndarray) -> torch.Tensor:
            return float_tensor(a) if info.task == "regression" else long_tensor(a)

        return DatasetSplits(
            info=info,
            x_train=xt(parts["train"][0]),
            y_train=yt(parts["train"][1]),
            x_val=xt(parts["val"][0]),
            y_val=yt(parts["val"][1]),
            x_test=xt(parts["test"][0]),
            y_test=yt(parts["test"][1]),
        )

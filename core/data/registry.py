"""The dataset registry: names -> :class:`Dataset`, plus an in-process LRU of loaded splits."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable

from ._util import check_seed
from .base import Dataset, DatasetError, DatasetSplits

CACHE_SIZE = 4

_REGISTRY: dict[str, Dataset] = {}
_CACHE: OrderedDict[Hashable, DatasetSplits] = OrderedDict()
_LOCK = threading.RLock()


def register(dataset: Dataset, *, replace: bool = False) -> Dataset:
    """Register ``dataset`` under ``dataset.name`` and return it.

    Raises :class:`DatasetError` if the name is empty, looks like an ``.npz`` path, or is
    already taken (unless ``replace``; replacing drops that name's cached splits).
    """
    name = getattr(dataset, "name", "")
    if not isinstance(dataset, Dataset):
        raise DatasetError(f"register() needs a Dataset instance, got {type(dataset).__name__}")
    if not isinstance(name, str) or not name.strip():
        raise DatasetError("a registered dataset needs a non-empty string name")
    if name.endswith(".npz") or os.sep in name or "/" in name:
        raise DatasetError(f"dataset name {name!r} looks like a file path; choose a plain name")
    with _LOCK:
        if name in _REGISTRY and not replace:
            raise DatasetError(f"dataset {name!r} is already registered")
        _REGISTRY[name] = dataset
        for key in [k for k in _CACHE if isinstance(k, tuple) and k[0] == ("name", name)]:
            del _CACHE[key]
    return dataset


def available() -> list[str]:
    """Registered dataset names, sorted."""
    with _LOCK:
        return sorted(_REGISTRY)


def _looks_like_path(name_or_path: str) -> bool:
    return name_or_path.endswith(".npz") or "/" in name_or_path or os.sep in name_or_path


def get_dataset(name_or_path: str) -> Dataset:
    """The registered dataset called ``name_or_path``, else an :class:`NpzDataset` for a path.

    A string that is not a registered name is taken as a path when it ends in ``.npz``, contains
    a path separator, or names an existing file; otherwise :class:`DatasetError` lists the known
    names.
    """
    from .npz import NpzDataset

    if not isinstance(name_or_path, str | os.PathLike):
        raise DatasetError(f"dataset must be a name or a path, got {type(name_or_path).__name__}")
    key = os.fspath(name_or_path)
    with _LOCK:
        if key in _REGISTRY:
            return _REGISTRY[key]
    if _looks_like_path(key) or os.path.isfile(key):
        ds = NpzDataset(key)
        ds.info()  # surface a missing or bad file here, with its one-line message
        return ds
    raise DatasetError(
        f"unknown dataset {key!r}; known datasets: {', '.join(available())} (or a path to a .npz file)"
    )


def _cache_key(dataset: Dataset, seed: int) -> Hashable:
    from .npz import NpzDataset

    if isinstance(dataset, NpzDataset):
        st = os.stat(dataset.path)  # a rewritten file is a different cache entry
        return (("path", os.path.abspath(dataset.path), st.st_mtime_ns, st.st_size), seed)
    return (("name", dataset.name), seed)


def load_dataset(name_or_path: str, seed: int = 0) -> DatasetSplits:
    """``get_dataset(name_or_path).load(seed)``, memoised in-process (LRU of ``CACHE_SIZE`` entries).

    The returned tensors are shared between callers: treat them as read-only (clone before any
    in-place change).
    """
    seed = check_seed(seed)
    dataset = get_dataset(name_or_path)
    key = _cache_key(dataset, seed)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    splits = dataset.load(seed)
    with _LOCK:
        _CACHE[key] = splits
        _CACHE.move_to_end(key)
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
    return splits


def clear_cache() -> None:
    """Empty the split cache and the generators' own caches (e.g. the MNIST-1D arrays)."""
    from . import mnist1d_data

    with _LOCK:
        _CACHE.clear()
    mnist1d_data.clear_cache()

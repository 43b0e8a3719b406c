"""A study's dataset as the training code takes it: a built-in name, or a local file for ``ds_<id>``.

An uploaded dataset's canonical ``.npz`` is read through the blob store (the local artifacts folder,
or object storage with a local copy per hash under ``artifacts_dir/dataset-cache``).

An image dataset uploaded before its canonical file held the input normalisation (or the class
names) is completed here, once per worker machine: a copy with the full image state goes to
``dataset-cache/<sha>.image-state.npz`` (:func:`~archscreen.core.data.images.complete_image_state`:
the per-channel stats of its train split, computed as the upload computes them now; the record's
class names). Chosen over a data migration because blobs are content-addressed and may sit in
object storage, which a schema migration should not rewrite; the stored blob stays as it was, so
its hash still checks, and the study trains normalised like a new upload, its exported model taking
raw pixels.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from archscreen.settings import Settings
from archscreen.store import Database
from archscreen.store import datasets as dataset_store
from archscreen.store.blobs import blob_store


class DatasetGone(RuntimeError):
    """The study's uploaded dataset no longer exists (it cannot be deleted while used; this is a
    database restored without it, or a blob lost from storage)."""


def local_dataset(db: Database, settings: Settings, name: str) -> str:
    dataset_id = dataset_store.parse_ref(name)
    if dataset_id is None:
        return name
    with db.session() as s:
        record = dataset_store.get_any(s, dataset_id)
    if record is None:
        raise DatasetGone(f"dataset {name} does not exist")
    store = blob_store(settings.dataset_store_url, settings.resolved_artifacts_dir / "datasets")
    try:
        path = store.local_path(record.blob_sha256, settings.resolved_artifacts_dir / "dataset-cache")
    except FileNotFoundError as exc:
        raise DatasetGone(str(exc)) from None
    if record.format in ("image_zip", "image_parquet"):
        cache = settings.resolved_artifacts_dir / "dataset-cache"
        path = completed_image_file(
            path, cache / f"{record.blob_sha256}.image-state.npz", record.facts.get("classes")
        )
    return str(path)


def completed_image_file(path: Path, completed: Path, classes: list[str] | None) -> Path:
    """``path`` when its image state is complete (it has ``classes``), else a completed copy at
    ``completed``, written once (atomically: workers on one machine may race for it)."""
    from archscreen.core.data.images import complete_image_state
    from archscreen.core.data.preprocess import read_state

    state = read_state(str(path))
    if state is not None and "classes" in state:
        return path
    if completed.is_file():
        return completed
    completed.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=completed.parent, prefix=".image-state-")
    os.close(fd)
    try:
        complete_image_state(path, tmp, classes)
        os.replace(tmp, completed)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return completed

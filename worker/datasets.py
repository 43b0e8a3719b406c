"""A study's dataset as the training code takes it: a built-in name, or a local file for ``ds_<id>``.

An uploaded dataset's canonical ``.npz`` is read through the blob store (the local artifacts folder,
or object storage with a local copy per hash under ``artifacts_dir/dataset-cache``).
"""

from __future__ import annotations

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
    return str(path)

"""A study's dataset as the worker reads it: an image dataset uploaded before its canonical file held
the input normalisation is completed in the worker's cache (issue 28: old image uploads trained on
0..255), on a real SQLite database and the local blob store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from archscreen.core.data.images import write_image_npz
from archscreen.core.data.npz import NpzDataset
from archscreen.core.data.preprocess import read_state
from archscreen.settings import Settings
from archscreen.store import Database
from archscreen.store import datasets as dataset_store
from archscreen.store.auth import get_or_create_tenant
from archscreen.store.blobs import blob_store, sha256_of
from archscreen.worker.artifacts import dataset_preprocessing
from archscreen.worker.datasets import local_dataset
from tests.core.data.test_images import digits_members, strip_state, write_zip


def stored(db: Database, settings: Settings, canonical: Path, facts: dict[str, object], fmt: str) -> str:
    """``ds_<id>`` of ``canonical`` put into the blob store with a dataset row, as an upload does."""
    sha = sha256_of(canonical)
    blob_store(None, settings.resolved_artifacts_dir / "datasets").put(canonical, sha)
    with db.session() as s:
        tenant = get_or_create_tenant(s, "team")
        s.flush()
        record, _ = dataset_store.create(
            s,
            tenant.id,
            name=canonical.name,
            format=fmt,
            label_column="",
            sha256=sha,
            blob_sha256=sha,
            size_bytes=canonical.stat().st_size,
            blob_bytes=canonical.stat().st_size,
            facts=facts,
        )
        return record.ref


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'archscreen.db'}")
    database.migrate()
    yield database
    database.dispose()


def test_an_old_image_upload_trains_normalised_and_its_model_takes_raw_pixels(
    db: Database, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    new = tmp_path / "new.npz"
    classes, image = write_image_npz(
        write_zip(tmp_path / "d.zip", digits_members(per_class=6, split_level=True)),
        "image_zip",
        new,
        1 << 26,
    )
    old = strip_state(new, tmp_path / "old.npz")
    ref = stored(db, settings, old, {"classes": classes, "image": image}, "image_zip")

    path = local_dataset(db, settings, ref)
    assert path.endswith(".image-state.npz") and "dataset-cache" in path
    state = dataset_preprocessing(path)  # what the exported model's input module is built from
    assert state is not None and state["kind"] == "image" and state["classes"] == ["0", "1", "2"]
    assert state["mean"] == pytest.approx(image["mean"], abs=2e-6)
    x = NpzDataset(path).load(0).x_train
    assert abs(float(x.mean())) < 0.1 and 0.8 < float(x.std()) < 1.2  # normalised, not 0..255
    assert local_dataset(db, settings, ref) == path  # written once, then reused
    # the stored blob is untouched: its content still matches its hash
    blob = settings.resolved_artifacts_dir / "datasets" / sha256_of(old)[:2] / sha256_of(old)
    assert sha256_of(blob) == sha256_of(old) and read_state(str(blob)) is None

    # a new upload (complete state) and an .npz upload are read from the store as they are
    ref_new = stored(db, settings, new, {"classes": classes, "image": image}, "image_zip")
    assert local_dataset(db, settings, ref_new).endswith(sha256_of(new))
    plain = tmp_path / "plain.npz"
    np.savez(plain, x_train=np.zeros((8, 1, 4, 4), np.uint8), y_train=np.arange(8) % 2)
    ref_npz = stored(db, settings, plain, {"classes": None}, "npz")
    assert local_dataset(db, settings, ref_npz).endswith(sha256_of(plain))

"""One contract for every blob store: a local folder, and fsspec (its memory and local filesystems;
S3 goes through the same class with s3fs)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from archscreen.store.blobs import BlobStore, FsspecBlobStore, LocalBlobStore, blob_store, sha256_of


@pytest.fixture(params=["local", "fsspec-memory", "fsspec-file"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    if request.param == "fsspec-memory":
        return FsspecBlobStore(f"memory://archscreen-test-{uuid.uuid4().hex}")
    return FsspecBlobStore(f"file://{tmp_path / 'fs'}")


def test_put_is_idempotent_and_reads_back_the_same_bytes(store: BlobStore, tmp_path: Path) -> None:
    src = tmp_path / "a.npz"
    src.write_bytes(b"payload" * 1000)
    sha = sha256_of(src)
    assert not store.exists(sha)
    store.put(src, sha)
    store.put(src, sha)
    assert store.exists(sha)
    local = store.local_path(sha, tmp_path / "cache")
    assert local.read_bytes() == src.read_bytes()
    assert store.local_path(sha, tmp_path / "cache") == local, "a second read reuses the local copy"
    store.delete(sha)
    store.delete(sha)
    assert not store.exists(sha)


def test_names_must_be_sha256(store: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="sha256"):
        store.exists("../../etc/passwd")


def test_missing_blob_is_a_file_not_found(store: BlobStore, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        store.local_path("0" * 64, tmp_path / "cache")


def test_configured_store() -> None:
    assert isinstance(blob_store(None, Path("/tmp/x")), LocalBlobStore)
    assert isinstance(blob_store("file:///tmp/y", Path("/tmp/x")), LocalBlobStore)
    assert isinstance(blob_store("memory://bucket/prefix", Path("/tmp/x")), FsspecBlobStore)


def test_models_live_in_a_folder_of_the_dataset_store(tmp_path: Path) -> None:
    from archscreen.store.blobs import model_key, model_store

    local = model_store(None, tmp_path)
    assert isinstance(local, LocalBlobStore) and local.root == tmp_path / "models"
    remote = model_store(f"memory://archscreen-test-{uuid.uuid4().hex}/datasets/", tmp_path)
    assert isinstance(remote, FsspecBlobStore) and remote.prefix.endswith("/datasets/models")
    src = tmp_path / "m.pt"
    src.write_bytes(b"weights")
    sha = sha256_of(src)
    local.put(src, sha)
    assert (tmp_path / model_key(sha)).read_bytes() == b"weights"
    with pytest.raises(ValueError, match="sha256"):
        model_key("../x")

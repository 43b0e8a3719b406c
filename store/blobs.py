"""Content-addressed file storage for datasets and tuned models: one interface, a local folder or
any fsspec URL.

A blob is named by the sha256 of its bytes, so storing the same file twice keeps one copy and a
reader can check what it got. :class:`LocalBlobStore` (the artifacts folder; embedded mode and
docker-compose's shared volume) and :class:`FsspecBlobStore` (``s3://bucket/prefix`` through
s3fs, or any other fsspec filesystem) pass the same contract tests. Workers read through
:meth:`BlobStore.local_path`, which keeps a local copy per hash.

Tuning jobs' models (:func:`model_store`) live in a ``models/`` folder of the same store, so one
setting (``ARCHSCREEN_DATASET_STORE_URL``) places both; the two never share a blob.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path

CHUNK = 1 << 20


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256[:80]!r}")
    return sha256


class BlobStore(ABC):
    """Files by sha256. ``put`` is idempotent; ``local_path`` gives a local file for reading."""

    @abstractmethod
    def put(self, src: Path, sha256: str) -> None:
        """Store ``src`` (whose digest the caller computed) under ``sha256``; no-op if present."""

    @abstractmethod
    def exists(self, sha256: str) -> bool: ...

    @abstractmethod
    def delete(self, sha256: str) -> None:
        """Remove the blob; absent is fine."""

    @abstractmethod
    def local_path(self, sha256: str, cache_dir: Path) -> Path:
        """A local file holding the blob (downloaded into ``cache_dir`` once, then reused)."""


class LocalBlobStore(BlobStore):
    """``root/ab/abcdef…``: a folder on this machine (or a volume every process mounts)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, sha256: str) -> Path:
        sha256 = _check(sha256)
        return self.root / sha256[:2] / sha256

    def put(self, src: Path, sha256: str) -> None:
        dst = self._path(sha256)
        if dst.exists():
            return
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".put-")
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)  # atomic: a reader sees all of the file or none of it
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).is_file()

    def delete(self, sha256: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(sha256).unlink()

    def local_path(self, sha256: str, cache_dir: Path) -> Path:
        path = self._path(sha256)
        if not path.is_file():
            raise FileNotFoundError(f"blob {sha256} is missing from {self.root}")
        return path


class FsspecBlobStore(BlobStore):
    """Any fsspec URL prefix: ``s3://bucket/datasets`` (with s3fs installed and credentials in the
    environment, as boto does), ``gcs://…``, ``memory://…``, ``file:///…``."""

    def __init__(self, url: str) -> None:
        import fsspec

        self.fs, self.prefix = fsspec.core.url_to_fs(url)
        self.prefix = self.prefix.rstrip("/")

    def _key(self, sha256: str) -> str:
        sha256 = _check(sha256)
        return f"{self.prefix}/{sha256[:2]}/{sha256}"

    def put(self, src: Path, sha256: str) -> None:
        if not self.exists(sha256):
            key = self._key(sha256)
            self.fs.makedirs(key.rsplit("/", 1)[0], exist_ok=True)  # a no-op on object stores
            self.fs.put_file(str(src), key)

    def exists(self, sha256: str) -> bool:
        return bool(self.fs.exists(self._key(sha256)))

    def delete(self, sha256: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._key(sha256))

    def local_path(self, sha256: str, cache_dir: Path) -> Path:
        cached = Path(cache_dir) / sha256[:2] / sha256
        if cached.is_file():
            return cached
        cached.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=".get-")
        os.close(fd)
        try:
            self.fs.get_file(self._key(sha256), tmp)
            if sha256_of(Path(tmp)) != sha256:
                raise OSError(f"blob {sha256} arrived corrupted")
            os.replace(tmp, cached)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return cached


def blob_store(url: str | None, default_root: Path) -> BlobStore:
    """The configured store: ``ARCHSCREEN_DATASET_STORE_URL``, else a folder under the artifacts dir."""
    if not url:
        return LocalBlobStore(default_root)
    if url.startswith("file://") and "::" not in url:
        return LocalBlobStore(Path(url.removeprefix("file://")))
    return FsspecBlobStore(url)


MODELS = "models"


def model_key(sha256: str) -> str:
    """Where a model blob lies, relative to the store's root (recorded on the job for operators)."""
    sha256 = _check(sha256)
    return f"{MODELS}/{sha256[:2]}/{sha256}"


def model_store(url: str | None, artifacts_dir: Path) -> BlobStore:
    """Tuned models: ``<artifacts dir>/models``, or ``<ARCHSCREEN_DATASET_STORE_URL>/models``.

    Beside the datasets rather than a setting of their own: whoever configured S3 for uploads
    wants the workers' models there too (a worker's local disk is not the API's).
    """
    if not url:
        return LocalBlobStore(Path(artifacts_dir) / MODELS)
    # a chained fsspec URL (simplecache::s3://…) takes the folder on its last part too
    return blob_store(url.rstrip("/") + "/" + MODELS, Path(artifacts_dir) / MODELS)

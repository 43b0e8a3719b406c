"""/api/v1/datasets: a tenant's own data: streamed upload, validated in a limited child process,
stored by content; list, read, delete (409 while a study uses it).

Upload: ``POST /api/v1/datasets?name=NAME&format=npz|parquet|csv&label_column=COL`` with the file
as the raw body (``Content-Type: application/octet-stream``). A study then names it
``"dataset": "ds_<id>"`` (the ``ref`` field of the response).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse

from archscreen.api.deps import DatabaseDep, IdPath, PageDep, SessionDep, SettingsDep, TenantDep
from archscreen.api.errors import ApiValidationError, item
from archscreen.api.image_upload import (
    IMAGE_MODE_DOC,
    IMAGE_SIZE_DOC,
    IMAGE_SIZE_PATTERN,
    NO_LABEL,
    image_args,
)
from archscreen.api.limits import LimitExceeded
from archscreen.api.schemas import DatasetOut, ErrorResponse, LimitResponse, Page, TooLargeResponse
from archscreen.settings import Settings
from archscreen.store import Tenant
from archscreen.store import datasets as dataset_store
from archscreen.store.blobs import BlobStore, blob_store
from archscreen.store.datasets import DatasetRecord
from archscreen.store.models import DatasetFormat

router = APIRouter(prefix="/datasets", tags=["datasets"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such dataset."}
}
SUFFIX_FORMAT: dict[str, DatasetFormat] = {
    ".npz": "npz",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".zip": "image_zip",
}
FORMAT_HINT = (
    "give format (npz, parquet, csv, image_zip or image_parquet), or a name ending in a suffix of those"
)
NO_LABEL_FORMATS = ("npz", "image_zip")  # targets inside the file: y_* arrays, class folders
CHUNK = 1 << 16


def store_for(settings: Settings) -> BlobStore:
    return blob_store(settings.dataset_store_url, settings.resolved_artifacts_dir / "datasets")


def dataset_out(record: DatasetRecord, *, created: bool = False) -> DatasetOut:
    facts = record.facts
    return DatasetOut(
        id=record.id,
        ref=record.ref,
        name=record.name,
        format=record.format,
        label_column=record.label_column or None,
        sha256=record.sha256,
        size_bytes=record.size_bytes,
        task=facts["task"],
        input_shape=facts["input_shape"],
        input_kind=facts["input_kind"],
        num_classes=facts.get("num_classes"),
        target_dim=facts.get("target_dim"),
        vocab_size=facts.get("vocab_size"),
        classes=facts.get("classes"),
        split_sizes=facts["split_sizes"],
        image=facts.get("image"),
        created_at=record.created_at,
        created=created,
    )


def _limit_child(memory_bytes: int, cpu_s: int) -> None:
    """In the validation child, before exec: bounded address space and CPU time."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))


def check_file(
    src: Path, fmt: str, label_column: str | None, out: Path, settings: Settings, extra: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Run :mod:`archscreen.core.data.check` in a child process under memory/CPU/wall limits."""
    cmd = [
        sys.executable,
        "-m",
        "archscreen.core.data.check",
        str(src),
        "--format",
        fmt,
        "--out",
        str(out),
        "--max-bytes",
        str(settings.max_dataset_unpacked_bytes),
    ]
    if label_column:
        cmd += ["--label-column", label_column]
    cmd += extra
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=settings.dataset_check_timeout_s,
            preexec_fn=lambda: _limit_child(
                settings.dataset_check_memory_bytes, int(settings.dataset_check_timeout_s)
            ),
            env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
    except subprocess.TimeoutExpired:
        raise ApiValidationError(
            [item(["body"], f"validating the file took over {settings.dataset_check_timeout_s:.0f} s")]
        ) from None
    if proc.returncode == 2:
        raise ApiValidationError(
            [item(["body"], proc.stderr.strip().splitlines()[-1] if proc.stderr else "invalid")]
        )
    if proc.returncode != 0:
        # killed by a limit (MemoryError inside torch/numpy, SIGXCPU, SIGKILL): a bad file all the same
        raise ApiValidationError(
            [item(["body"], "the file could not be validated within the memory and time limits")]
        )
    facts: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return facts


async def _receive_to_file(request: Request, dst: Path, limit: int) -> tuple[str, int]:
    """Stream the body to ``dst`` (never whole in memory): its sha256 and size; 413 past ``limit``."""
    digest = hashlib.sha256()
    size = 0
    with dst.open("wb") as f:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, "upload too large")
            digest.update(chunk)
            f.write(chunk)
    return digest.hexdigest(), size


def _check_count(s: Any, settings: Settings, tenant: Tenant) -> tuple[int, int]:
    count, total = dataset_store.usage(s, tenant.id)
    if count >= settings.max_datasets_per_tenant:
        raise LimitExceeded(
            429,
            f"the tenant has {count} datasets; the limit is {settings.max_datasets_per_tenant} "
            "(ARCHSCREEN_MAX_DATASETS_PER_TENANT): delete one first",
            settings.max_datasets_per_tenant,
            count,
        )
    return count, total


@router.post(
    "",
    response_model=DatasetOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": DatasetOut, "description": "The same file was uploaded before: that dataset."},
        413: {"model": TooLargeResponse, "description": "Over the file-size or total-bytes limit."},
        429: {"model": LimitResponse, "description": "At the number-of-datasets limit."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def upload_dataset(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    tenant: TenantDep,
    name: Annotated[str, Query(min_length=1, max_length=200, pattern=r"^[\w.\- ]+$")] = "dataset",
    format: Annotated[DatasetFormat | None, Query(description="Default: from name's suffix.")] = None,
    label_column: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
    image_size: Annotated[str | None, Query(pattern=IMAGE_SIZE_PATTERN, description=IMAGE_SIZE_DOC)] = None,
    image_mode: Annotated[Literal["L", "RGB"] | None, Query(description=IMAGE_MODE_DOC)] = None,
) -> Any:
    """Upload a dataset file (streamed), validated before it is stored; the same bytes twice are one
    dataset."""
    fmt = format or SUFFIX_FORMAT.get(Path(name).suffix.lower())
    if fmt is None:
        raise ApiValidationError([item(["query", "format"], FORMAT_HINT)])
    if fmt not in NO_LABEL_FORMATS and not label_column:
        raise ApiValidationError(
            [item(["query", "label_column"], f"a {fmt} table needs the label column's name")]
        )
    if fmt in NO_LABEL_FORMATS and label_column:
        raise ApiValidationError([item(["query", "label_column"], f"{NO_LABEL[fmt]}: no label column")])
    _, total = _check_count(session, settings, tenant)
    with tempfile.TemporaryDirectory(dir=settings.resolved_artifacts_dir, prefix=".upload-") as tmp:
        upload, canonical = Path(tmp) / "upload", Path(tmp) / "canonical.npz"
        try:
            sha, size = await _receive_to_file(request, upload, settings.max_dataset_bytes)
        except HTTPException:
            return JSONResponse(
                {
                    "detail": f"the file is larger than {settings.max_dataset_bytes:,} bytes "
                    "(ARCHSCREEN_MAX_DATASET_BYTES)",
                    "limit": settings.max_dataset_bytes,
                    "current": None,
                },
                status_code=413,
                headers={"Connection": "close"},
            )
        existing = dataset_store.by_content(session, tenant.id, sha, label_column or "")
        if existing is not None:
            return JSONResponse(dataset_out(existing).model_dump(mode="json"), status_code=200)
        if total + size > settings.max_dataset_total_bytes_per_tenant:
            raise LimitExceeded(
                413,
                f"this upload would make {total + size:,} bytes of datasets; the tenant's limit is "
                f"{settings.max_dataset_total_bytes_per_tenant:,} "
                "(ARCHSCREEN_MAX_DATASET_TOTAL_BYTES_PER_TENANT)",
                settings.max_dataset_total_bytes_per_tenant,
                total,
            )
        facts = await anyio.to_thread.run_sync(
            check_file, upload, fmt, label_column, canonical, settings, image_args(image_size, image_mode)
        )
        fmt = facts.pop("format", fmt)  # a Parquet with an image-bytes column is image_parquet
        kept = Path(facts.pop("canonical"))
        blob_sha = sha if kept == upload else await anyio.to_thread.run_sync(_sha256_of, kept)
        blobs = store_for(settings)
        await anyio.to_thread.run_sync(blobs.put, kept, blob_sha)
        record, created = dataset_store.create(
            session,
            tenant.id,
            name=name,
            format=fmt,
            label_column=label_column or "",
            sha256=sha,
            blob_sha256=blob_sha,
            size_bytes=size,
            blob_bytes=kept.stat().st_size,
            facts=facts,
        )
    return JSONResponse(
        dataset_out(record, created=created).model_dump(mode="json"), status_code=201 if created else 200
    )


def _sha256_of(path: Path) -> str:
    from archscreen.store.blobs import sha256_of

    return sha256_of(path)


@router.get("", response_model=Page[DatasetOut])
def list_datasets(
    session: SessionDep,
    tenant: TenantDep,
    page: PageDep,
    sha256: Annotated[
        str | None, Query(pattern=r"^[0-9a-f]{64}$", description="Only the dataset of this file.")
    ] = None,
    label_column: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[DatasetOut]:
    if sha256 is not None:
        found = dataset_store.by_content(session, tenant.id, sha256, label_column or "")
        return Page(data=[dataset_out(found)] if found else [], count=1 if found else 0)
    limit, offset = page
    rows, total = dataset_store.list_for(session, tenant.id, limit=limit, offset=offset)
    return Page(data=[dataset_out(r) for r in rows], count=total)


@router.get("/{dataset_id}", response_model=DatasetOut, responses=NOT_FOUND)
def get_dataset(dataset_id: IdPath, session: SessionDep, tenant: TenantDep) -> DatasetOut:
    record = dataset_store.get(session, tenant.id, dataset_id)
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"dataset {dataset_id} not found")
    return dataset_out(record)


@router.delete(
    "/{dataset_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses={**NOT_FOUND, 409: {"model": ErrorResponse, "description": "A study uses the dataset."}},
)
def delete_dataset(
    dataset_id: IdPath, session: SessionDep, db: DatabaseDep, settings: SettingsDep, tenant: TenantDep
) -> Response:
    users = dataset_store.studies_using(session, tenant.id, dataset_id)
    if users:
        shown = ", ".join(repr(n) for n in users[:5]) + (" ..." if len(users) > 5 else "")
        raise HTTPException(status.HTTP_409_CONFLICT, f"dataset {dataset_id} is used by studies {shown}")
    record = dataset_store.delete(session, tenant.id, dataset_id)
    if record is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"dataset {dataset_id} not found")
    still_used = dataset_store.blob_in_use(session, record.blob_sha256)
    session.commit()
    if not still_used:
        with contextlib.suppress(OSError):
            store_for(settings).delete(record.blob_sha256)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def dataset_info(session: Any, tenant_id: int, name: str) -> Any:
    """The :class:`DatasetInfo` a study's dataset gives shape inference: built-in, or ``ds_<id>``.

    Raises :class:`ApiValidationError` naming ``body.dataset`` for an unknown one."""
    from archscreen.core.data import available, get_dataset
    from archscreen.core.data.base import DatasetInfo

    dataset_id = dataset_store.parse_ref(name)
    if dataset_id is None:
        if name not in available():
            raise ApiValidationError(
                [
                    item(
                        ["body", "dataset"],
                        f"unknown dataset {name[:60]!r}; built-in: {', '.join(available())}, "
                        "or ds_<id> of an uploaded dataset",
                    )
                ]
            )
        return get_dataset(name).info()
    record = dataset_store.get(session, tenant_id, dataset_id)
    if record is None:
        raise ApiValidationError([item(["body", "dataset"], f"no dataset {name} (see GET /api/v1/datasets)")])
    f = record.facts
    return DatasetInfo(
        name=name,
        task=f["task"],
        input_shape=tuple(f["input_shape"]),
        input_kind=f["input_kind"],
        num_classes=f.get("num_classes"),
        target_dim=f.get("target_dim"),
        vocab_size=f.get("vocab_size"),
    )

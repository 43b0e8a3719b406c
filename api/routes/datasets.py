"""/api/v1/datasets: a tenant's own data: streamed upload, validated in a limited child process,
stored by content; list, read, delete (409 while a study uses it).

Upload: ``POST /api/v1/datasets?name=NAME&format=npz|parquet|csv&label_column=COL`` with the file
as the raw body (``Content-Type: application/octet-stream``), or as the file part of a
``multipart/form-data`` body (``curl -F file=@data.npz``; :mod:`archscreen.api.upload_stream`).
A study then names it ``"dataset": "ds_<id>"`` (the ``ref`` field of the response).

A table's preprocessing (fitted on its train split, stored with it; ``core/data/preprocess.py``)
takes ``standardize``, ``categorical_columns`` (repeated, or comma-separated) and
``max_categories``, as query parameters or (multipart) form fields; the response's
``preprocessing`` reports what was done to each column.

Order of an upload: the parameters (422), the tenant's dataset count (429), a validation slot
(429 with ``Retry-After``, :class:`~archscreen.api.limits.ValidationSlots`), the body streamed to
a temporary file (413 past ``ARCHSCREEN_MAX_DATASET_BYTES``), the same bytes uploaded before (200),
the tenant's total bytes (413), validation in the sandbox (:mod:`archscreen.api.validation`: 422,
or 413 for a table over ``ARCHSCREEN_MAX_DATASET_UNPACKED_BYTES``), then the blob and the row.
Any refusal leaves nothing: the temporary folder goes with the request.
"""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from archscreen.api.deps import DatabaseDep, IdPath, PageDep, SessionDep, SettingsDep, TenantDep
from archscreen.api.errors import ApiValidationError, item
from archscreen.api.image_upload import (
    IMAGE_MODE_DOC,
    IMAGE_SIZE_DOC,
    IMAGE_SIZE_PATTERN,
    NO_LABEL,
    ImageOptions,
    resolve_images,
)
from archscreen.api.limits import LimitExceeded, ValidationSlots, host_validation_slots
from archscreen.api.schemas import DatasetOut, ErrorResponse, LimitResponse, Page, TooLargeResponse
from archscreen.api.upload_stream import (
    FORM_FIELDS,
    OPTION_FIELDS,
    Received,
    UploadTooLarge,
    is_multipart,
    receive_multipart,
    receive_raw,
)
from archscreen.api.validation import check_file
from archscreen.core.names import DATASET_FORMATS, DatasetFormat
from archscreen.core.table_options import DEFAULT_MAX_CATEGORIES, MAX_CATEGORIES_LIMIT, TableOptions
from archscreen.settings import Settings
from archscreen.store import Tenant
from archscreen.store import datasets as dataset_store
from archscreen.store.blobs import BlobStore, blob_store
from archscreen.store.datasets import DatasetRecord

log = logging.getLogger("archscreen.api")
router = APIRouter(prefix="/datasets", tags=["datasets"])
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "No such dataset."}
}
FORMATS: tuple[DatasetFormat, ...] = DATASET_FORMATS
NO_LABEL_FORMATS = ("npz", "image_zip")  # targets inside the file: y_* arrays, class folders
FORMAT_HINT = (
    "give format (npz, parquet, csv, image_zip or image_parquet), or a name ending in a suffix of those"
)
SUFFIX_FORMAT: dict[str, DatasetFormat] = {
    ".npz": "npz",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
    ".zip": "image_zip",
}
# What the request log and metrics record for an upload the client abandoned (nginx's code): it
# is the client's doing, not a server error, and nobody reads the answer.
CLIENT_CLOSED_REQUEST = 499


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
        class_counts=facts.get("class_counts"),
        dropped_rows_missing_label=facts.get("dropped_rows_missing_label"),
        preprocessing=facts.get("preprocessing"),
        created_at=record.created_at,
        created=created,
    )


StandardizeQuery = Annotated[
    bool | None,
    Query(
        description="A table's numeric columns to zero mean, unit variance on its train split (default true)."
    ),
]
CategoricalQuery = Annotated[
    str | None,
    Query(
        max_length=1000,
        description="Integer columns of a table to one-hot like its string columns (comma-separated).",
    ),
]
MaxCategoriesQuery = Annotated[
    int | None,
    Query(
        ge=1,
        le=MAX_CATEGORIES_LIMIT,
        description=f"One-hot columns per categorical column; rarer values share an 'other' column "
        f"(default {DEFAULT_MAX_CATEGORIES}).",
    ),
]


@dataclass(frozen=True)
class QueryOptions:
    """A table's preprocessing options as the request gave them (None: not given)."""

    standardize: bool | None = None
    categorical_columns: list[str] | None = None
    max_categories: int | None = None


def table_options(fmt: str | None, given: QueryOptions, where: str = "query") -> TableOptions | None:
    """A table's options (defaults for what is not given); None for an ``.npz`` or images (422 if
    any is given)."""
    if fmt in ("npz", "image_zip", "image_parquet"):
        what = "an .npz is stored as it is" if fmt == "npz" else f"an {fmt} upload holds images"
        for field in OPTION_FIELDS:
            if getattr(given, field) is not None:
                raise ApiValidationError(
                    [item([where, field], f"{what}: preprocessing options are for tables")]
                )
        return None
    names = tuple(
        n.strip() for value in given.categorical_columns or [] for n in value.split(",") if n.strip()
    )
    return TableOptions(
        standardize=True if given.standardize is None else given.standardize,
        categorical_columns=names,
        max_categories=DEFAULT_MAX_CATEGORIES if given.max_categories is None else given.max_categories,
    )


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")  # FastAPI's bool words


def _form_options(fields: dict[str, str]) -> QueryOptions:
    """The options among a multipart form's text fields, parsed as the query's would be."""
    standardize: bool | None = None
    if (text := fields.get("standardize")) is not None:
        if text.strip().lower() not in _TRUE + _FALSE:
            raise ApiValidationError([item(["body", "standardize"], "true or false")])
        standardize = text.strip().lower() in _TRUE
    max_categories: int | None = None
    if (text := fields.get("max_categories")) is not None:
        try:
            max_categories = int(text)
        except ValueError:
            max_categories = 0
        if not 1 <= max_categories <= MAX_CATEGORIES_LIMIT:
            raise ApiValidationError(
                [item(["body", "max_categories"], f"an integer from 1 to {MAX_CATEGORIES_LIMIT}")]
            )
    text = fields.get("categorical_columns")
    return QueryOptions(standardize, None if text is None else [text], max_categories)


def resolve_options(
    params: UploadParams, query: QueryOptions, received: Received | None
) -> TableOptions | None:
    """The upload's table options from the query and (multipart) the form's fields, like
    :func:`resolve_params`: 422 naming the field where the two differ or an npz is given any."""
    if received is None:
        return table_options(params.format, query)
    form = _form_options(received.fields)
    for given, where in ((query, "query"), (form, "body")):
        table_options(params.format, given, where)  # an npz takes none: 422 naming where it came
    merged: dict[str, Any] = {}
    for key in OPTION_FIELDS:
        given, sent = getattr(query, key), getattr(form, key)
        if key == "categorical_columns" and given is not None and sent is not None:
            differ = table_options("parquet", QueryOptions(categorical_columns=given)) != table_options(
                "parquet", QueryOptions(categorical_columns=sent)
            )
        else:
            differ = given is not None and sent is not None and given != sent
        if differ:
            raise ApiValidationError([item(["body", key], f"differs from the query's {key} ({given!r})")])
        merged[key] = given if given is not None else sent
    return table_options(params.format, QueryOptions(**merged))


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


def _check_total(settings: Settings, total: int, size: int) -> None:
    if total + size > settings.max_dataset_total_bytes_per_tenant:
        raise LimitExceeded(
            413,
            f"this upload would make {total + size:,} bytes of datasets; the tenant's limit is "
            f"{settings.max_dataset_total_bytes_per_tenant:,} "
            "(ARCHSCREEN_MAX_DATASET_TOTAL_BYTES_PER_TENANT)",
            settings.max_dataset_total_bytes_per_tenant,
            total,
        )


@dataclass(frozen=True)
class UploadParams:
    name: str
    format: DatasetFormat
    label_column: str | None


def resolve_params(query: dict[str, str | None], received: Received | None) -> UploadParams:
    """Name, format and label column from the query and (multipart) the form's text fields and its
    file part; 422 naming the parameter where they are missing, contradict, or do not fit."""
    fields = received.fields if received else {}
    values: dict[str, str | None] = {}
    for key in FORM_FIELDS:
        given, sent = query.get(key), fields.get(key)
        if given is not None and sent is not None and given != sent:
            raise ApiValidationError([item(["body", key], f"differs from the query's {key} ({given!r})")])
        values[key] = given if given is not None else sent
    filename = received.filename if received else None
    part = received.part_name if received else None
    name = values["name"] or (dataset_store.name_from_file(filename) if filename else "dataset")
    if not re.match(dataset_store.NAME_PATTERN, name) or len(name) > dataset_store.NAME_MAX:
        raise ApiValidationError(
            [item(["body", "name"], "letters, digits, '_', '.', '-' and spaces, up to 200")]
        )
    fmt = values["format"] or (part if part in FORMATS else None)
    for source in (filename, name):
        fmt = fmt or (SUFFIX_FORMAT.get(Path(source).suffix.lower()) if source else None)

    def where(key: str) -> str:
        return "query" if received is None or query.get(key) is not None else "body"

    if fmt not in FORMATS:
        raise ApiValidationError([item([where("format"), "format"], FORMAT_HINT)])
    label_column = values["label_column"] or None
    if fmt not in NO_LABEL_FORMATS and not label_column:
        raise ApiValidationError(
            [item([where("label_column"), "label_column"], f"a {fmt} table needs the label column's name")]
        )
    if fmt in NO_LABEL_FORMATS and label_column:
        message = f"{NO_LABEL[fmt]}: no label column"
        raise ApiValidationError([item([where("label_column"), "label_column"], message)])
    return UploadParams(name, fmt, label_column)


def _too_large(settings: Settings) -> JSONResponse:
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


def validation_slots(request: Request, settings: Settings) -> ValidationSlots:
    """The host's validation slots, made once per app (the host count is worked out once)."""
    slots: ValidationSlots | None = getattr(request.app.state, "validation_slots", None)
    if slots is None:
        slots = ValidationSlots(
            settings.data_dir.resolve() / "validation-slots",
            host_validation_slots(settings),
            settings.max_concurrent_validations_per_tenant,
        )
        request.app.state.validation_slots = slots
    return slots


# Which fields each format refuses (a 422 naming the field). Stated in words, not as JSON Schema
# if/then: schemathesis' coverage phase cannot evaluate conditionals beside a binary file part.
FORMAT_RULES_DOC = (
    "An npz names its targets y_* and is stored as it is: it takes no label_column, no table options "
    "(standardize, categorical_columns, max_categories) and no image options (image_size, image_mode). "
    "Images take no table options; an image_zip's classes are its folders (no label_column)."
)

FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "The dataset file; its filename's suffix (.zip: image_zip), or a part named "
            "after a format, gives the format.",
        },
        "name": {"type": "string", "minLength": 1, "maxLength": 200, "pattern": dataset_store.NAME_PATTERN},
        "format": {"type": "string", "enum": list(FORMATS), "description": FORMAT_RULES_DOC},
        "label_column": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "description": "A parquet/csv table's label column. An npz or image_zip upload must not send it.",
        },
        "standardize": {"type": "boolean", "description": "A table's: as the query parameter."},
        "categorical_columns": {
            "type": "string",
            "maxLength": 1000,
            "description": "A table's integer columns to one-hot (comma-separated, or the field repeated).",
        },
        "max_categories": {"type": "integer", "minimum": 1, "maximum": MAX_CATEGORIES_LIMIT},
        "image_size": {"type": "string", "pattern": IMAGE_SIZE_PATTERN, "description": IMAGE_SIZE_DOC},
        "image_mode": {"type": "string", "enum": ["L", "RGB"], "description": IMAGE_MODE_DOC},
    },
}


@router.post(
    "",
    response_model=DatasetOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {"model": DatasetOut, "description": "The same file was uploaded before: that dataset."},
        413: {
            "model": TooLargeResponse,
            "description": "Over the file-size, table-size or total-bytes limit.",
        },
        429: {
            "model": LimitResponse,
            "description": "At the number-of-datasets limit, or at the concurrent-validations limit "
            "(retry after Retry-After seconds).",
            "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}},
        },
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "multipart/form-data": {"schema": FORM_SCHEMA},
            },
        }
    },
)
async def upload_dataset(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    tenant: TenantDep,
    name: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            pattern=dataset_store.NAME_PATTERN,
            description="Default: the multipart file's name, else 'dataset'.",
        ),
    ] = None,
    format: Annotated[
        DatasetFormat | None, Query(description="Default: from the file part, or name's suffix.")
    ] = None,
    label_column: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            description="The label column of a parquet or csv table (required for those). An npz "
            "upload must not send it: its targets are its y_* arrays (a 422 naming label_column).",
        ),
    ] = None,
    standardize: StandardizeQuery = None,
    categorical_columns: CategoricalQuery = None,
    max_categories: MaxCategoriesQuery = None,
    image_size: Annotated[str | None, Query(pattern=IMAGE_SIZE_PATTERN, description=IMAGE_SIZE_DOC)] = None,
    image_mode: Annotated[Literal["L", "RGB"] | None, Query(description=IMAGE_MODE_DOC)] = None,
) -> Any:
    """Upload a dataset file, as the raw body or as the file part of a multipart/form-data body
    (streamed to disk either way), validated before it is stored; the same bytes (with the same
    label column and options) twice are one dataset. A table's numeric columns are standardised
    unless ``standardize=false``: the response's ``preprocessing`` says what was done."""
    query = {"name": name, "format": format, "label_column": label_column}
    option_query = QueryOptions(
        standardize, None if categorical_columns is None else [categorical_columns], max_categories
    )
    images = ImageOptions(image_size, image_mode)
    multipart = is_multipart(request)
    with contextlib.ExitStack() as stack:
        try:
            if not multipart:
                # no format or label column, or options for an npz: 422 before the body is read
                params = resolve_params(query, None)
                resolve_options(params, option_query, None)
                resolve_images(params.format, images, None)
            _, total = await anyio.to_thread.run_sync(_check_count, session, settings, tenant)
            stack.enter_context(validation_slots(request, settings).hold(tenant.id))
        except (ApiValidationError, LimitExceeded):
            await _discard_body(request)
            raise
        tmp = stack.enter_context(
            tempfile.TemporaryDirectory(dir=settings.resolved_artifacts_dir, prefix=".upload-")
        )
        upload, canonical = Path(tmp) / "upload", Path(tmp) / "canonical.npz"
        receive = receive_multipart if multipart else receive_raw
        try:
            received = await receive(request, upload, settings.max_dataset_bytes)
        except UploadTooLarge:
            return _too_large(settings)
        except ApiValidationError:  # a malformed form: answered once the client has sent its body
            await _discard_body(request)
            raise
        except ClientDisconnect:
            # not an error of ours: the client went away; nothing was stored (the folder goes)
            log.info("upload of %s cancelled: the client disconnected", name or "a dataset")
            return Response(status_code=CLIENT_CLOSED_REQUEST)
        params = resolve_params(query, received if multipart else None)
        options = resolve_options(params, option_query, received if multipart else None)
        images = resolve_images(params.format, images, received.fields if multipart else None)
        return await _validate_and_store(
            session, settings, tenant, params, (options, images), received, upload, canonical, total
        )


# A body refused before it is read is still read up to this many bytes and dropped, so the client,
# which sends it all before it reads an answer, gets the answer instead of a reset connection.
DISCARD_BYTES = 16 * 2**20


async def _discard_body(request: Request) -> None:
    read = 0
    # RuntimeError: Starlette's "Stream consumed", the whole body was read already
    with contextlib.suppress(ClientDisconnect, RuntimeError):
        async for chunk in request.stream():
            read += len(chunk)
            if read > DISCARD_BYTES:
                break


async def _validate_and_store(
    session: Any,
    settings: Settings,
    tenant: Tenant,
    params: UploadParams,
    given: tuple[TableOptions | None, ImageOptions],
    received: Received,
    upload: Path,
    canonical: Path,
    total: int,
) -> JSONResponse:
    label = params.label_column or ""
    options, images = given
    options_key = images.key(options.key_sha256() if options is not None else "")
    existing = await anyio.to_thread.run_sync(
        dataset_store.by_content, session, tenant.id, received.sha256, label, options_key
    )
    if existing is not None:
        return JSONResponse(dataset_out(existing).model_dump(mode="json"), status_code=200)
    _check_total(settings, total, received.size)
    facts = await anyio.to_thread.run_sync(
        check_file,
        upload,
        params.format,
        params.label_column,
        canonical,
        settings,
        options,
        images.child_args(),
    )
    fmt = facts.pop("format", params.format)  # a Parquet with an image-bytes column is image_parquet
    kept = Path(facts.pop("canonical"))
    blob_sha = received.sha256 if kept == upload else await anyio.to_thread.run_sync(_sha256_of, kept)
    await anyio.to_thread.run_sync(store_for(settings).put, kept, blob_sha)

    def create() -> tuple[DatasetRecord, bool]:
        return dataset_store.create(
            session,
            tenant.id,
            name=params.name,
            format=fmt,
            label_column=label,
            sha256=received.sha256,
            blob_sha256=blob_sha,
            size_bytes=received.size,
            blob_bytes=kept.stat().st_size,
            facts=facts,
            options_key=options_key,
        )

    record, created = await anyio.to_thread.run_sync(create)
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
    standardize: StandardizeQuery = None,
    categorical_columns: CategoricalQuery = None,
    max_categories: MaxCategoriesQuery = None,
) -> Page[DatasetOut]:
    if sha256 is not None:
        # a table (label_column given) is found with its options, the defaults if none are given
        options = table_options(
            None if label_column else "npz",
            QueryOptions(
                standardize, None if categorical_columns is None else [categorical_columns], max_categories
            ),
        )
        key = options.key_sha256() if options is not None else ""
        found = dataset_store.by_content(session, tenant.id, sha256, label_column or "", key)
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
    """:func:`archscreen.store.datasets.dataset_info`, an unknown dataset a 422 naming
    ``body.dataset`` (:class:`ApiValidationError`)."""
    try:
        return dataset_store.dataset_info(session, tenant_id, name)
    except dataset_store.UnknownDataset as exc:
        raise ApiValidationError([item(["body", "dataset"], str(exc))]) from None


def train_rows_of(session: Any, tenant_id: int, name: str) -> int | None:
    """The training rows of this tenant's uploaded dataset ``ds_<id>`` (None for a built-in, whose
    epoch cap was measured): what a study's ``max_epochs="auto"`` is resolved with
    (:func:`archscreen.core.defaults.default_max_epochs`). Call after :func:`dataset_info`."""
    dataset_id = dataset_store.parse_ref(name)
    if dataset_id is None:
        return None
    record = dataset_store.get(session, tenant_id, dataset_id)
    return None if record is None else int(record.facts["split_sizes"]["train"])

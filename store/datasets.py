"""Datasets of a tenant: rows by id, by content, usage, and which studies use one.

A study names a dataset by reference ``ds_<id>`` (see :func:`ref`); built-in datasets by name.
Returns frozen :class:`DatasetRecord` s, never ORM rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from archscreen.store.models import Dataset, DatasetFormat, Study

REF = re.compile(r"^ds_([1-9][0-9]{0,9})$")
# A dataset's display name: letters, digits, '_', '.', '-' and spaces, 1 to 200 characters.
NAME_PATTERN = r"^[\w.\- ]+$"
NAME_MAX = 200
_NOT_NAME = re.compile(r"[^\w.\- ]+")


def name_from_file(filename: str) -> str:
    """A valid dataset name from a file name: ``data (1).npz`` → ``data _1_.npz``; runs of other
    characters become one ``_``; the folder part is dropped; ``dataset`` when nothing is left."""
    base = re.split(r"[\\/]", filename)[-1]
    name = _NOT_NAME.sub("_", base).strip()
    if len(name) > NAME_MAX:  # keep the suffix, which can give the format
        stem, dot, suffix = name.rpartition(".")
        name = (
            (stem[: NAME_MAX - len(suffix) - 1] + dot + suffix)
            if dot and len(suffix) < 10
            else name[:NAME_MAX]
        )
    return name.strip() or "dataset"


def ref(dataset_id: int) -> str:
    """How a study names dataset ``dataset_id``: ``ds_12``."""
    return f"ds_{dataset_id}"


MAX_ID = 2**31 - 1  # ids are 32-bit integers in the database


def parse_ref(name: str) -> int | None:
    """``ds_12`` → 12; anything else (a built-in name, an id past the database's range) → None."""
    m = REF.match(name)
    return int(m.group(1)) if m and int(m.group(1)) <= MAX_ID else None


@dataclass(frozen=True)
class DatasetRecord:
    id: int
    tenant_id: int
    name: str
    format: DatasetFormat
    label_column: str
    options_key: str
    sha256: str
    blob_sha256: str
    size_bytes: int
    blob_bytes: int
    facts: dict[str, Any]
    created_at: datetime

    @property
    def ref(self) -> str:
        return ref(self.id)


def _record(row: Dataset) -> DatasetRecord:
    return DatasetRecord(
        row.id,
        row.tenant_id,
        row.name,
        row.format,
        row.label_column,
        row.options_key,
        row.sha256,
        row.blob_sha256,
        int(row.size_bytes),
        int(row.blob_bytes),
        dict(row.facts),
        row.created_at,
    )


def get(s: Session, tenant_id: int, dataset_id: int) -> DatasetRecord | None:
    row = s.get(Dataset, dataset_id)
    return None if row is None or row.tenant_id != tenant_id else _record(row)


def get_any(s: Session, dataset_id: int) -> DatasetRecord | None:
    """By id whatever the tenant (workers, which act for the study's tenant)."""
    row = s.get(Dataset, dataset_id)
    return None if row is None else _record(row)


def by_content(
    s: Session, tenant_id: int, sha256: str, label_column: str = "", options_key: str = ""
) -> DatasetRecord | None:
    """The tenant's dataset of this file, label column and options (``options_key``: a table's
    :meth:`~archscreen.core.table_options.TableOptions.key_sha256`; "" for an ``.npz``)."""
    row = s.scalar(
        select(Dataset).where(
            Dataset.tenant_id == tenant_id,
            Dataset.sha256 == sha256,
            Dataset.label_column == label_column,
            Dataset.options_key == options_key,
        )
    )
    return None if row is None else _record(row)


def list_for(s: Session, tenant_id: int, *, limit: int, offset: int) -> tuple[list[DatasetRecord], int]:
    total = s.scalar(select(func.count()).select_from(Dataset).where(Dataset.tenant_id == tenant_id)) or 0
    rows = s.scalars(
        select(Dataset).where(Dataset.tenant_id == tenant_id).order_by(Dataset.id).limit(limit).offset(offset)
    ).all()
    return [_record(r) for r in rows], int(total)


def usage(s: Session, tenant_id: int) -> tuple[int, int]:
    """(number of datasets, bytes uploaded) of the tenant."""
    n, total = s.execute(
        select(func.count(), func.coalesce(func.sum(Dataset.size_bytes), 0)).where(
            Dataset.tenant_id == tenant_id
        )
    ).one()
    return int(n), int(total)


def create(
    s: Session,
    tenant_id: int,
    *,
    name: str,
    format: DatasetFormat,
    label_column: str,
    sha256: str,
    blob_sha256: str,
    size_bytes: int,
    blob_bytes: int,
    facts: dict[str, Any],
    options_key: str = "",
) -> tuple[DatasetRecord, bool]:
    """The new dataset, or the tenant's existing one with the same content (``created`` False)."""
    existing = by_content(s, tenant_id, sha256, label_column, options_key)
    if existing is not None:
        return existing, False
    row = Dataset(
        tenant_id=tenant_id,
        name=name,
        format=format,
        label_column=label_column,
        options_key=options_key,
        sha256=sha256,
        blob_sha256=blob_sha256,
        size_bytes=size_bytes,
        blob_bytes=blob_bytes,
        facts=facts,
    )
    try:
        with s.begin_nested():
            s.add(row)
            s.flush()
    except IntegrityError:  # the same upload, concurrently
        again = by_content(s, tenant_id, sha256, label_column, options_key)
        assert again is not None
        return again, False
    return _record(row), True


def studies_using(s: Session, tenant_id: int, dataset_id: int) -> list[str]:
    return list(
        s.scalars(
            select(Study.name)
            .where(Study.tenant_id == tenant_id, Study.dataset == ref(dataset_id))
            .order_by(Study.id)
        )
    )


def delete(s: Session, tenant_id: int, dataset_id: int) -> DatasetRecord | None:
    row = s.get(Dataset, dataset_id)
    if row is None or row.tenant_id != tenant_id:
        return None
    record = _record(row)
    s.delete(row)
    s.flush()
    return record


def blob_in_use(s: Session, blob_sha256: str) -> bool:
    """Whether any dataset (of any tenant) still points at this blob."""
    return bool(s.scalar(select(func.count()).select_from(Dataset).where(Dataset.blob_sha256 == blob_sha256)))


class UnknownDataset(ValueError):
    """A study's dataset is neither a built-in name nor one of the tenant's ``ds_<id>``."""


def dataset_info(s: Session, tenant_id: int, name: str) -> Any:
    """The :class:`~archscreen.core.data.base.DatasetInfo` a study's dataset gives shape inference:
    a built-in's, or an upload's from its stored facts (no file is read). Here, not in ``api/``:
    the API's study and candidate routes and the worker's search step (which must not import
    ``api/``) all need it. Raises :class:`UnknownDataset` with a message for the user."""
    from archscreen.core.data import available, get_dataset
    from archscreen.core.data.base import DatasetInfo

    dataset_id = parse_ref(name)
    if dataset_id is None:
        if name not in available():
            raise UnknownDataset(
                f"unknown dataset {name[:60]!r}; built-in: {', '.join(available())}, "
                "or ds_<id> of an uploaded dataset"
            )
        return get_dataset(name).info()
    record = get(s, tenant_id, dataset_id)
    if record is None:
        raise UnknownDataset(f"no dataset {name} (see GET /api/v1/datasets)")
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

"""What ``store/`` hands to the layers above it: frozen, typed records, never ORM rows.

A route or the worker reads a record's attributes; it cannot change a row by assigning to it,
lazy-load a relationship after its session closed, or see a study's config as an untyped dict:
:class:`StudyRecord` carries the stored JSON re-hydrated as :class:`~archscreen.config.ScreeningConfig`
and :class:`~archscreen.config.PromotionPolicy` (the models the API validated it with, so their
defaults are the product's, defined once). Writes go through ``store/`` functions, which take ids.

``of`` takes an ORM row or a Core row of the table's columns: the read path selects columns
(``select(Job.__table__)``), which skips the ORM's identity map and per-object bookkeeping, and
``slots=True`` keeps a record as cheap as the row it copies.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Row

from archscreen.config import PromotionPolicy, ScreeningConfig, SearchConfig
from archscreen.core.names import JobState
from archscreen.store.models import Candidate, EpochMetric, Job, JobKind, Study

__all__ = ["CandidateBrief", "CandidateRecord", "EpochRecord", "JobRecord", "StudyRecord", "columns_of"]


def columns_of(record: type, table: Any) -> list[Any]:
    """The table's columns in the order of the record's fields: ``record(*row)`` then builds it from a
    Core row by position, the cheapest way there is (by name costs a lookup per field)."""
    return [table.c[f.name] for f in fields(record)]


# A policy stored before the tuning stage's fields existed was made (and screened) for the
# multi-start tuning of its day: it keeps it. Its screening runs kept no weights for the
# screen-weights start, today's default for new studies (core/defaults.py TUNING).
_POLICY_BEFORE_TUNING_START: dict[str, Any] = {"tuning_start": "multi", "halving": False}


@dataclass(frozen=True, slots=True)
class StudyRecord:
    id: int
    tenant_id: int
    name: str
    dataset: str
    screening: ScreeningConfig
    policy: PromotionPolicy
    created_at: datetime
    auto_promoted_at: datetime | None
    version: int
    space: dict[str, Any] | None = None  # a search study's space document (issue 29)
    search: SearchConfig | None = None

    @classmethod
    def of(cls, row: Study | Row[Any]) -> StudyRecord:
        return cls(
            id=row.id,
            tenant_id=row.tenant_id,
            name=row.name,
            dataset=row.dataset,
            # stored as the validated models' JSON: re-hydrated, not re-defaulted
            screening=ScreeningConfig.model_validate(row.screening),
            policy=PromotionPolicy.model_validate({**_POLICY_BEFORE_TUNING_START, **row.policy}),
            created_at=row.created_at,
            auto_promoted_at=row.auto_promoted_at,
            version=row.version,
            space=row.space,
            search=None if row.search is None else SearchConfig.model_validate(row.search),
        )


@dataclass(frozen=True, slots=True)
class CandidateRecord:
    id: int
    study_id: int
    name: str
    spec: dict[str, Any]
    spec_hash: str
    num_params: int
    summary: list[dict[str, Any]]
    created_at: datetime
    params: dict[str, Any] | None = None  # a search trial's parameters (issue 29)

    @classmethod
    def of(cls, row: Candidate | Row[Any]) -> CandidateRecord:
        return cls(
            id=row.id,
            study_id=row.study_id,
            name=row.name,
            spec=row.spec,
            spec_hash=row.spec_hash,
            num_params=row.num_params,
            summary=row.summary,
            created_at=row.created_at,
            params=row.params,
        )


@dataclass(frozen=True, slots=True)
class CandidateBrief:
    """What a ranking and a study summary show of a candidate (no spec: it is not parsed for them)."""

    id: int
    study_id: int
    name: str
    num_params: int


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A screening run (``kind='screen'``) or a tuning job (``kind='tune'``); leases stay in store/."""

    id: int
    kind: JobKind
    study_id: int
    candidate_id: int
    seed: int
    state: JobState
    attempts: int
    max_attempts: int
    cancel_requested: bool
    error: str | None
    config: dict[str, Any]
    result: dict[str, Any] | None
    epoch: int
    max_epochs: int
    elapsed_s: float
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    # a succeeded tuning job's model file in the blob store (store.blobs.model_key)
    model_key: str | None = None
    model_bytes: int | None = None
    model_sha256: str | None = None
    cpu_seconds: float = 0.0  # CPU time its processes spent on it (worker/runner.py)

    @classmethod
    def of(cls, row: Job | Row[Any]) -> JobRecord:
        return cls(
            id=row.id,
            kind=row.kind,
            study_id=row.study_id,
            candidate_id=row.candidate_id,
            seed=row.seed,
            state=row.state,
            attempts=row.attempts,
            max_attempts=row.max_attempts,
            cancel_requested=row.cancel_requested,
            error=row.error,
            config=row.config or {},
            result=row.result,
            epoch=row.epoch,
            max_epochs=row.max_epochs,
            elapsed_s=row.elapsed_s,
            created_at=row.created_at,
            started_at=row.started_at,
            finished_at=row.finished_at,
            model_key=row.model_key,
            model_bytes=row.model_bytes,
            model_sha256=row.model_sha256,
            cpu_seconds=float(getattr(row, "cpu_seconds", 0.0) or 0.0),
        )


@dataclass(frozen=True, slots=True)
class EpochRecord:
    job_id: int
    epoch: int
    train_loss: float | None
    val_loss: float | None
    val_accuracy: float | None
    seconds: float
    extra: dict[str, Any]

    @classmethod
    def of(cls, row: EpochMetric | Row[Any]) -> EpochRecord:
        return cls(
            job_id=row.job_id,
            epoch=row.epoch,
            train_loss=row.train_loss,
            val_loss=row.val_loss,
            val_accuracy=row.val_accuracy,
            seconds=row.seconds,
            extra=row.extra or {},
        )

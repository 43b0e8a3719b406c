"""Tables of the service (SQLAlchemy 2 typed declarative); the schema is versioned by Alembic.

One ``jobs`` table holds both screening runs (``kind='screen'``, one per
candidate and seed) and tuning jobs (``kind='tune'``): they share one life
cycle (queued → running → succeeded | failed | cancelled | diverged; a search study's screening
run under ASHA also running → paused → queued (promoted) | stopped), one
lease/heartbeat protocol and one reaper.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# A job's state and a dataset's format are defined in core/names.py, so that the client reads
# them without SQLAlchemy (FINAL_STATES re-exported for store/ranking.py, DatasetFormat for
# store/datasets.py, which import them from here).
from archscreen.core.names import FINAL_STATES as FINAL_STATES
from archscreen.core.names import DatasetFormat as DatasetFormat
from archscreen.core.names import JobState

JobKind = Literal["screen", "tune"]
JOB_KINDS: tuple[JobKind, ...] = get_args(JobKind)

# Stable constraint names so Alembic migrations (and their downgrades) can refer to them.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _now() -> datetime:
    from archscreen.store.db import utcnow

    return utcnow()


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)


class ApiToken(Base):
    """An API token; only its SHA-256 is stored (the token has 256 random bits, so no salt/KDF)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    tenant: Mapped[Tenant] = relationship()


class Dataset(Base):
    """A tenant's uploaded dataset. The bytes live in the blob store under ``blob_sha256`` (the
    canonical ``.npz`` the workers read); ``sha256`` is the uploaded file's, so the same upload
    (with the same label column and preprocessing options) is the same dataset. ``options_key``:
    the sha256 of a table's :class:`~archscreen.core.table_options.TableOptions` (empty for an
    ``.npz``, and for a table uploaded before revision 0005, which had no preprocessing)."""

    __tablename__ = "datasets"
    __table_args__ = (
        UniqueConstraint(
            "tenant_id", "sha256", "label_column", "options_key", name="uq_datasets_tenant_sha_label_options"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    format: Mapped[DatasetFormat] = mapped_column(String(16))
    label_column: Mapped[str] = mapped_column(String(200), default="")
    options_key: Mapped[str] = mapped_column(String(64), default="", server_default="")
    sha256: Mapped[str] = mapped_column(String(64))
    blob_sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    blob_bytes: Mapped[int] = mapped_column(BigInteger)
    facts: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (UniqueConstraint("tenant_id", "name", name="uq_studies_tenant_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    dataset: Mapped[str] = mapped_column(String(200))
    screening: Mapped[dict[str, Any]] = mapped_column(JSON)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)
    # Set once, by compare-and-set, when the study's auto-promotion fired.
    auto_promoted_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # When a cancel last sent the study's promotion check: one message per study, not one per cancel.
    promotion_check_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # Bumped on every change under the study (jobs, metrics): cheap ETags for pollers.
    version: Mapped[int] = mapped_column(Integer, default=0)
    # A search study (issue 29): its space document and SearchConfig JSON; NULL for a candidate list.
    space: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    search: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    # Held (compare-and-set) while one search step asks and tells: two steps never ask at once.
    search_step_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # A search study's ASHA scheduler state (core/asha.py's state_dict), read and written by the
    # search step under its lock; NULL before the first step, or with ASHA off.
    asha: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    # a search stopped by its owner (POST /studies/{id}/search/stop): no trial is asked after it
    search_stopped_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Candidate(Base):
    __tablename__ = "candidates"
    __table_args__ = (UniqueConstraint("study_id", "spec_hash", name="uq_candidates_study_spec"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    spec_hash: Mapped[str] = mapped_column(String(64))
    num_params: Mapped[int] = mapped_column(Integer)
    summary: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)
    # A search trial's parameters (the point it was built from); NULL for a submitted spec.
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)

    jobs: Mapped[list[Job]] = relationship(back_populates="candidate", order_by="Job.id")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("candidate_id", "kind", "seed", name="uq_jobs_candidate_kind_seed"),
        Index("ix_jobs_state_lease", "state", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[JobKind] = mapped_column(String(16))
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    candidate_id: Mapped[int] = mapped_column(ForeignKey("candidates.id", ondelete="CASCADE"), index=True)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[JobState] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    max_epochs: Mapped[int] = mapped_column(Integer, default=0)
    elapsed_s: Mapped[float] = mapped_column(Float, default=0.0)
    # CPU time (user + system) the job's processes spent on it, summed over its attempts up to its
    # last recorded epoch (worker/runner.py); on a GPU worker still CPU time, not GPU time
    cpu_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=_now)
    # A succeeded tuning job's model file (best-epoch weights, spec, rate) in the blob store:
    # ``model_key`` is its path under the store's root (store.blobs.model_key), set by finish().
    model_key: Mapped[str | None] = mapped_column(String(300), nullable=True)
    model_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    model_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)

    candidate: Mapped[Candidate] = relationship(back_populates="jobs")


class EpochMetric(Base):
    __tablename__ = "epoch_metrics"
    __table_args__ = (UniqueConstraint("job_id", "epoch", name="uq_epoch_metrics_job_epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    val_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    val_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    seconds: Mapped[float] = mapped_column(Float, default=0.0)
    extra: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class SearchTrial(Base):
    """One Optuna trial of a search study and what became of it: the unique (study, number) key is
    what keeps a repeated search step from making a second candidate for one trial. Several trials
    may share a candidate (the sampler proposed the same point twice)."""

    __tablename__ = "search_trials"
    __table_args__ = (UniqueConstraint("study_id", "number", name="uq_search_trials_study_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    candidate_id: Mapped[int | None] = mapped_column(
        ForeignKey("candidates.id", ondelete="CASCADE"), nullable=True
    )
    # told: NULL while its screening runs, else Optuna's final state (complete, fail, pruned)
    told: Mapped[str | None] = mapped_column(String(16), nullable=True)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    refused: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)


class IdempotencyKey(Base):
    """A replayable response for a POST carrying an ``Idempotency-Key`` header."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("tenant_id", "key", name="uq_idempotency_keys_tenant_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)


class WorkerSeen(Base):
    """Each worker process writes here every heartbeat: /readyz and /metrics read it."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime, default=_now)
    last_seen: Mapped[datetime] = mapped_column(DateTime, default=_now)

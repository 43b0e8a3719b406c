"""Studies, candidates and the reads the API serves (always scoped to a tenant).

Every function returns records (:mod:`archscreen.store.records`), never ORM rows. Reads of many
rows select the tables' columns (Core rows, no ORM identity map): the read path's cost is mostly
row handling, and this is what ``/summary`` and ``/candidates/{id}`` run on every full read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from archscreen.config import PromotionPolicy, ScreeningConfig, SearchConfig
from archscreen.store.jobs import bump_study
from archscreen.store.models import Candidate, EpochMetric, IdempotencyKey, Job, JobKind, Study
from archscreen.store.records import (
    CandidateBrief,
    CandidateRecord,
    EpochRecord,
    JobRecord,
    StudyRecord,
    columns_of,
)

_STUDIES, _CANDIDATES, _JOBS, _METRICS = (
    Study.__table__,
    Candidate.__table__,
    Job.__table__,
    EpochMetric.__table__,
)

_JOB_COLUMNS = columns_of(JobRecord, _JOBS)
_EPOCH_COLUMNS = columns_of(EpochRecord, _METRICS)
_BRIEF_COLUMNS = columns_of(CandidateBrief, _CANDIDATES)


class Conflict(Exception):
    """A uniqueness rule was broken (e.g. a study name already used by the tenant)."""


def create_study(
    s: Session,
    tenant_id: int,
    *,
    name: str,
    dataset: str,
    screening: ScreeningConfig | Mapping[str, Any],
    policy: PromotionPolicy | Mapping[str, Any],
    space: dict[str, Any] | None = None,
    search: SearchConfig | Mapping[str, Any] | None = None,
    train_rows: int | None = None,
) -> StudyRecord:
    """A new study; its config is stored as the validated models' JSON (a mapping is validated here
    first, so what a reader re-hydrates always validates). A search study has ``space`` (the
    document, already checked by ``parse_space``) and ``search``.

    ``screening.max_epochs="auto"`` is resolved here, once, for ``dataset``
    (:meth:`ScreeningConfig.for_dataset`; ``train_rows``: the training rows of an uploaded dataset,
    which has no measured cap): the study stores, runs and reports a number, so what ran stays
    what the API shows even if the defaults change later.

    Raises:
        ValueError: ``auto`` on a dataset with no measured cap and no ``train_rows``.
    """
    resolved = ScreeningConfig.model_validate(screening).for_dataset(dataset, train_rows)
    study = Study(
        tenant_id=tenant_id,
        name=name,
        dataset=dataset,
        screening=resolved.model_dump(mode="json"),
        policy=PromotionPolicy.model_validate(policy).model_dump(mode="json"),
        space=space,
        search=None if search is None else SearchConfig.model_validate(search).model_dump(mode="json"),
    )
    try:
        with s.begin_nested():
            s.add(study)
            s.flush()
    except IntegrityError:
        raise Conflict(f"a study named {name!r} already exists") from None
    return StudyRecord.of(study)


def get_study(s: Session, tenant_id: int, study_id: int) -> StudyRecord | None:
    row = s.execute(
        select(_STUDIES).where(_STUDIES.c.id == study_id, _STUDIES.c.tenant_id == tenant_id)
    ).first()
    return None if row is None else StudyRecord.of(row)


def study_by_id(s: Session, study_id: int) -> StudyRecord | None:
    """Any tenant's study: for the worker and the promotion rule, which act on ids they were given."""
    row = s.execute(select(_STUDIES).where(_STUDIES.c.id == study_id)).first()
    return None if row is None else StudyRecord.of(row)


def get_study_by_name(s: Session, tenant_id: int, name: str) -> StudyRecord | None:
    row = s.execute(
        select(_STUDIES).where(_STUDIES.c.tenant_id == tenant_id, _STUDIES.c.name == name)
    ).first()
    return None if row is None else StudyRecord.of(row)


def list_studies(s: Session, tenant_id: int, *, limit: int, offset: int) -> tuple[list[StudyRecord], int]:
    where = Study.tenant_id == tenant_id
    total = s.scalar(select(func.count()).select_from(Study).where(where)) or 0
    rows = s.execute(select(_STUDIES).where(where).order_by(Study.id.desc()).limit(limit).offset(offset))
    return [StudyRecord.of(r) for r in rows], total


def job_counts(s: Session, study_ids: list[int], kind: JobKind | None = None) -> dict[int, dict[str, int]]:
    """``{study_id: {state: count}}`` for the given studies."""
    if not study_ids:
        return {}
    q = select(Job.study_id, Job.state, func.count()).where(Job.study_id.in_(study_ids))
    if kind is not None:
        q = q.where(Job.kind == kind)
    out: dict[int, dict[str, int]] = {sid: {} for sid in study_ids}
    for sid, state, n in s.execute(q.group_by(Job.study_id, Job.state)).all():
        out[sid][state] = n
    return out


def candidate_counts(s: Session, study_ids: list[int]) -> dict[int, int]:
    if not study_ids:
        return {}
    q = (
        select(Candidate.study_id, func.count())
        .where(Candidate.study_id.in_(study_ids))
        .group_by(Candidate.study_id)
    )
    counts = {sid: n for sid, n in s.execute(q).all()}
    return {sid: counts.get(sid, 0) for sid in study_ids}


def add_candidate(
    s: Session,
    study: StudyRecord,
    *,
    name: str,
    spec: dict[str, Any],
    spec_hash: str,
    num_params: int,
    summary: list[dict[str, Any]],
    max_attempts: int,
    params: dict[str, Any] | None = None,
) -> tuple[CandidateRecord, bool, list[JobRecord]]:
    """Add a candidate and its screening jobs (one per seed), or return the existing one.

    Returns ``(candidate, created, new_jobs)``; the caller enqueues ``new_jobs`` after commit.
    """
    existing = s.scalar(
        select(Candidate).where(Candidate.study_id == study.id, Candidate.spec_hash == spec_hash)
    )
    if existing is not None:
        return CandidateRecord.of(existing), False, []
    cand = Candidate(
        study_id=study.id,
        name=name,
        spec=spec,
        spec_hash=spec_hash,
        num_params=num_params,
        summary=summary,
        params=params,
    )
    try:
        with s.begin_nested():
            s.add(cand)
            s.flush()
    except IntegrityError:  # the same spec, submitted concurrently
        existing = s.scalar(
            select(Candidate).where(Candidate.study_id == study.id, Candidate.spec_hash == spec_hash)
        )
        assert existing is not None
        return CandidateRecord.of(existing), False, []
    jobs = [
        Job(
            kind="screen",
            study_id=study.id,
            candidate_id=cand.id,
            seed=int(seed),
            max_attempts=max_attempts,
            max_epochs=study.screening.epoch_cap,
            config={},
        )
        for seed in study.screening.seeds
    ]
    s.add_all(jobs)
    s.flush()
    bump_study(s, study.id)
    return CandidateRecord.of(cand), True, [JobRecord.of(j) for j in jobs]


def get_candidate(s: Session, tenant_id: int, candidate_id: int) -> CandidateRecord | None:
    """The candidate, if its study is ``tenant_id``'s (one query)."""
    row = s.execute(
        select(_CANDIDATES)
        .join(_STUDIES, _STUDIES.c.id == _CANDIDATES.c.study_id)
        .where(_CANDIDATES.c.id == candidate_id, _STUDIES.c.tenant_id == tenant_id)
    ).first()
    return None if row is None else CandidateRecord.of(row)


def list_candidates(
    s: Session, study_id: int, *, limit: int, offset: int
) -> tuple[list[CandidateRecord], int]:
    where = Candidate.study_id == study_id
    total = s.scalar(select(func.count()).select_from(Candidate).where(where)) or 0
    rows = s.execute(select(_CANDIDATES).where(where).order_by(Candidate.id).limit(limit).offset(offset))
    return [CandidateRecord.of(r) for r in rows], total


def candidate_spec(s: Session, candidate_id: int) -> dict[str, Any] | None:
    """A candidate's stored spec (what a job trains), by id."""
    return s.scalar(select(Candidate.spec).where(Candidate.id == candidate_id))


def candidate_ids(s: Session, study_id: int) -> list[int]:
    return list(s.scalars(select(Candidate.id).where(Candidate.study_id == study_id).order_by(Candidate.id)))


def study_rows(s: Session, study_id: int) -> tuple[list[CandidateBrief], list[JobRecord]]:
    """Every candidate (no spec) and job of a study, by id: read once for a ranking and a summary."""
    cands = s.execute(
        select(*_BRIEF_COLUMNS).where(_CANDIDATES.c.study_id == study_id).order_by(_CANDIDATES.c.id)
    )
    jobs = s.execute(select(*_JOB_COLUMNS).where(_JOBS.c.study_id == study_id).order_by(_JOBS.c.id))
    return [CandidateBrief(*r) for r in cands], [JobRecord(*r) for r in jobs]


def jobs_of(s: Session, candidate_ids: list[int], kind: JobKind | None = None) -> dict[int, list[JobRecord]]:
    out: dict[int, list[JobRecord]] = {cid: [] for cid in candidate_ids}
    if not candidate_ids:
        return out
    q = select(*_JOB_COLUMNS).where(_JOBS.c.candidate_id.in_(candidate_ids))
    if kind is not None:
        q = q.where(_JOBS.c.kind == kind)
    for row in s.execute(q.order_by(_JOBS.c.id)):
        job = JobRecord(*row)
        out[job.candidate_id].append(job)
    return out


def get_job(s: Session, tenant_id: int, job_id: int, kind: JobKind | None = None) -> JobRecord | None:
    """The job, if its study is ``tenant_id``'s (and it is of ``kind``, when given)."""
    q = (
        select(_JOBS)
        .join(_STUDIES, _STUDIES.c.id == _JOBS.c.study_id)
        .where(_JOBS.c.id == job_id, _STUDIES.c.tenant_id == tenant_id)
    )
    if kind is not None:
        q = q.where(_JOBS.c.kind == kind)
    row = s.execute(q).first()
    return None if row is None else JobRecord.of(row)


def metrics_of(s: Session, job_ids: list[int], since_epoch: int = 0) -> dict[int, list[EpochRecord]]:
    out: dict[int, list[EpochRecord]] = {jid: [] for jid in job_ids}
    if not job_ids:
        return out
    q = (
        select(*_EPOCH_COLUMNS)
        .where(_METRICS.c.job_id.in_(job_ids), _METRICS.c.epoch > since_epoch)
        .order_by(_METRICS.c.job_id, _METRICS.c.epoch)
    )
    for row in s.execute(q):
        point = EpochRecord(*row)
        out[point.job_id].append(point)
    return out


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The first response to a request with an ``Idempotency-Key``, replayed on a retry."""

    request_hash: str
    status: int
    body: Any


def idempotent_response(s: Session, tenant_id: int, key: str) -> StoredResponse | None:
    row = s.scalar(
        select(IdempotencyKey).where(IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key)
    )
    if row is None:
        return None
    return StoredResponse(
        request_hash=row.request_hash, status=row.response["status"], body=row.response["body"]
    )


def save_idempotent_response(
    s: Session, tenant_id: int, key: str, request_hash: str, response: dict[str, Any]
) -> bool:
    """Remember the response for ``key``; False if a concurrent request with the key won the race."""
    try:
        with s.begin_nested():
            s.add(IdempotencyKey(tenant_id=tenant_id, key=key, request_hash=request_hash, response=response))
            s.flush()
    except IntegrityError:
        return False
    return True


# The ETag lookups, built once: the polled path runs one of these per request (a 304 is only
# this), so neither statement construction nor the ORM layer is paid per request.
_VERSION = select(_STUDIES.c.id, _STUDIES.c.version).where(_STUDIES.c.tenant_id == bindparam("tenant"))
_VERSION_QUERIES = {
    "study": _VERSION.where(_STUDIES.c.id == bindparam("key")),
    "candidate": _VERSION.join(_CANDIDATES, _CANDIDATES.c.study_id == _STUDIES.c.id).where(
        _CANDIDATES.c.id == bindparam("key")
    ),
    "job": _VERSION.join(_JOBS, _JOBS.c.study_id == _STUDIES.c.id).where(_JOBS.c.id == bindparam("key")),
}


def version_of(
    s: Session,
    tenant_id: int,
    *,
    study_id: int | None = None,
    candidate_id: int | None = None,
    job_id: int | None = None,
) -> tuple[int, int] | None:
    """``(study_id, version)`` of the study that owns the given study/candidate/job, for ETags.

    One indexed lookup; ``None`` if it does not exist or belongs to another tenant.
    """
    if study_id is not None:
        which, key = "study", study_id
    elif candidate_id is not None:
        which, key = "candidate", candidate_id
    elif job_id is not None:
        which, key = "job", job_id
    else:
        raise ValueError("give one of study_id, candidate_id, job_id")
    row = s.connection().execute(_VERSION_QUERIES[which], {"tenant": tenant_id, "key": key}).first()
    return None if row is None else (int(row[0]), int(row[1]))

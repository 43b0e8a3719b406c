"""Studies, candidates and the reads the API serves (always scoped to a tenant)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from archscreen.store.jobs import bump_study
from archscreen.store.models import Candidate, EpochMetric, IdempotencyKey, Job, Study


class Conflict(Exception):
    """A uniqueness rule was broken (e.g. a study name already used by the tenant)."""


def create_study(
    s: Session, tenant_id: int, *, name: str, dataset: str, screening: dict[str, Any], policy: dict[str, Any]
) -> Study:
    study = Study(tenant_id=tenant_id, name=name, dataset=dataset, screening=screening, policy=policy)
    try:
        with s.begin_nested():
            s.add(study)
            s.flush()
    except IntegrityError:
        raise Conflict(f"a study named {name!r} already exists") from None
    return study


def get_study(s: Session, tenant_id: int, study_id: int) -> Study | None:
    study = s.get(Study, study_id)
    return study if study is not None and study.tenant_id == tenant_id else None


def get_study_by_name(s: Session, tenant_id: int, name: str) -> Study | None:
    return s.scalar(select(Study).where(Study.tenant_id == tenant_id, Study.name == name))


def list_studies(s: Session, tenant_id: int, *, limit: int, offset: int) -> tuple[list[Study], int]:
    where = Study.tenant_id == tenant_id
    total = s.scalar(select(func.count()).select_from(Study).where(where)) or 0
    rows = s.scalars(select(Study).where(where).order_by(Study.id.desc()).limit(limit).offset(offset)).all()
    return list(rows), total


def job_counts(s: Session, study_ids: list[int], kind: str | None = None) -> dict[int, dict[str, int]]:
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
    study: Study,
    *,
    name: str,
    spec: dict[str, Any],
    spec_hash: str,
    num_params: int,
    summary: list[dict[str, Any]],
    max_attempts: int,
) -> tuple[Candidate, bool, list[Job]]:
    """Add a candidate and its screening jobs (one per seed), or return the existing one.

    Returns ``(candidate, created, new_jobs)``; the caller enqueues ``new_jobs`` after commit.
    """
    existing = s.scalar(
        select(Candidate).where(Candidate.study_id == study.id, Candidate.spec_hash == spec_hash)
    )
    if existing is not None:
        return existing, False, []
    cand = Candidate(
        study_id=study.id, name=name, spec=spec, spec_hash=spec_hash, num_params=num_params, summary=summary
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
        return existing, False, []
    jobs = [
        Job(
            kind="screen",
            study_id=study.id,
            candidate_id=cand.id,
            seed=int(seed),
            max_attempts=max_attempts,
            max_epochs=int(study.screening["max_epochs"]),
            config={},
        )
        for seed in study.screening["seeds"]
    ]
    s.add_all(jobs)
    s.flush()
    bump_study(s, study.id)
    return cand, True, jobs


def get_candidate(s: Session, tenant_id: int, candidate_id: int) -> tuple[Candidate, Study] | None:
    cand = s.get(Candidate, candidate_id)
    if cand is None:
        return None
    study = s.get(Study, cand.study_id)
    if study is None or study.tenant_id != tenant_id:
        return None
    return cand, study


def list_candidates(s: Session, study_id: int, *, limit: int, offset: int) -> tuple[list[Candidate], int]:
    where = Candidate.study_id == study_id
    total = s.scalar(select(func.count()).select_from(Candidate).where(where)) or 0
    rows = s.scalars(select(Candidate).where(where).order_by(Candidate.id).limit(limit).offset(offset)).all()
    return list(rows), total


def jobs_of(s: Session, candidate_ids: list[int], kind: str | None = None) -> dict[int, list[Job]]:
    out: dict[int, list[Job]] = {cid: [] for cid in candidate_ids}
    if not candidate_ids:
        return out
    q = select(Job).where(Job.candidate_id.in_(candidate_ids))
    if kind is not None:
        q = q.where(Job.kind == kind)
    for job in s.scalars(q.order_by(Job.id)).all():
        out[job.candidate_id].append(job)
    return out


def metrics_of(s: Session, job_ids: list[int], since_epoch: int = 0) -> dict[int, list[EpochMetric]]:
    out: dict[int, list[EpochMetric]] = {jid: [] for jid in job_ids}
    if not job_ids:
        return out
    q = (
        select(EpochMetric)
        .where(EpochMetric.job_id.in_(job_ids), EpochMetric.epoch > since_epoch)
        .order_by(EpochMetric.job_id, EpochMetric.epoch)
    )
    for m in s.scalars(q).all():
        out[m.job_id].append(m)
    return out


def idempotent_response(s: Session, tenant_id: int, key: str) -> IdempotencyKey | None:
    return s.scalar(
        select(IdempotencyKey).where(IdempotencyKey.tenant_id == tenant_id, IdempotencyKey.key == key)
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
    q = select(Study.id, Study.version).where(Study.tenant_id == tenant_id)
    if study_id is not None:
        q = q.where(Study.id == study_id)
    elif candidate_id is not None:
        q = q.join(Candidate, Candidate.study_id == Study.id).where(Candidate.id == candidate_id)
    elif job_id is not None:
        q = q.join(Job, Job.study_id == Study.id).where(Job.id == job_id)
    else:
        raise ValueError("give one of study_id, candidate_id, job_id")
    row = s.execute(q).first()
    return None if row is None else (int(row[0]), int(row[1]))

"""The job life cycle: every state change is a compare-and-set ``UPDATE ... WHERE state = ...``.

queued → running (claim: takes the lease) → succeeded | failed | cancelled | diverged.
A worker renews its lease with each heartbeat; the reaper puts a job whose lease
expired back to ``queued`` (it resumes from its last checkpoint) until
``max_attempts`` deliveries, then fails it. Two workers that receive the same
message cannot both claim it, and only the lease owner can finish a job, so a
job delivered twice produces one result.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from archscreen.core.names import FINAL_STATES, JobState
from archscreen.store.db import utcnow
from archscreen.store.jsonsafe import jsonable
from archscreen.store.models import EpochMetric, Job, JobKind, Study, WorkerSeen
from archscreen.store.records import JobRecord


def bump_study(s: Session, study_id: int) -> None:
    """Invalidate pollers' ETags for everything under the study."""
    s.execute(update(Study).where(Study.id == study_id).values(version=Study.version + 1))


def _update_owned(s: Session, job_id: int, owner: str, **values: Any) -> bool:
    """``UPDATE`` a running job only while ``owner`` holds its lease (the compare-and-set every
    owner-only change goes through); False if the lease is someone else's or the job stopped."""
    res = s.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == "running", Job.lease_owner == owner)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return res.rowcount == 1  # type: ignore[attr-defined]


def claim(s: Session, job_id: int, owner: str, lease_s: float) -> JobRecord | None:
    """Take a queued job (``None`` if it is not queued: already running, finished or cancelled)."""
    now = utcnow()
    res = s.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.state == "queued",
            Job.cancel_requested.is_(False),
            Job.attempts < Job.max_attempts,
        )
        .values(
            state="running",
            attempts=Job.attempts + 1,
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_s),
            heartbeat_at=now,
            started_at=func.coalesce(Job.started_at, now),
            updated_at=now,
            error=None,
        )
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return None
    job = s.get(Job, job_id, populate_existing=True)
    assert job is not None
    bump_study(s, job.study_id)
    return JobRecord.of(job)


@dataclass(frozen=True)
class Heartbeat:
    owned: bool
    cancel_requested: bool


def heartbeat(s: Session, job_id: int, owner: str, lease_s: float) -> Heartbeat:
    """Renew the lease; says whether the caller still owns the job and whether a cancel was asked."""
    now = utcnow()
    owned = _update_owned(
        s, job_id, owner, lease_expires_at=now + timedelta(seconds=lease_s), heartbeat_at=now
    )
    cancel = bool(s.scalar(select(Job.cancel_requested).where(Job.id == job_id)))
    return Heartbeat(owned=owned, cancel_requested=cancel)


def record_epoch(
    s: Session,
    job_id: int,
    owner: str,
    *,
    epoch: int,
    max_epochs: int,
    elapsed_s: float,
    train_loss: float | None,
    val_loss: float | None,
    val_accuracy: float | None,
    seconds: float,
    extra: dict[str, Any],
    cpu_seconds: float | None = None,
) -> bool:
    """Store one epoch's metrics (upsert: a resumed job rewrites epochs it re-runs); False if not owner.
    ``cpu_seconds``: the job's CPU time so far (all its attempts), when the worker measured it."""
    job = s.scalar(select(Job).where(Job.id == job_id, Job.lease_owner == owner, Job.state == "running"))
    if job is None:
        return False
    values = dict(
        job_id=job_id,
        epoch=epoch,
        train_loss=jsonable(train_loss),
        val_loss=jsonable(val_loss),
        val_accuracy=jsonable(val_accuracy),
        seconds=seconds,
        extra=extra,
    )
    insert = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = insert(EpochMetric).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id", "epoch"], set_={k: stmt.excluded[k] for k in values if k != "job_id"}
    )
    s.execute(stmt)
    job.epoch, job.max_epochs, job.elapsed_s, job.updated_at = epoch, max_epochs, elapsed_s, utcnow()
    if cpu_seconds is not None:
        job.cpu_seconds = cpu_seconds
    bump_study(s, job.study_id)
    return True


@dataclass(frozen=True)
class ModelArtifact:
    """A file in the blob store: its key under the store's root, size and sha256."""

    key: str
    size: int
    sha256: str


def finish(
    s: Session,
    job_id: int,
    owner: str,
    state: str,
    *,
    result: dict[str, Any] | None = None,
    error: str | None = None,
    model: ModelArtifact | None = None,
    cpu_seconds: float | None = None,
) -> bool:
    """running → a final state, only by the lease owner (False if the lease was lost).
    ``cpu_seconds``: the job's CPU time over all its attempts (worker/runner.py), when measured.

    ``model``: the tuning job's model file, already in the blob store; recorded in the same
    compare-and-set, so a job is never seen succeeded before its model is known.
    """
    if state not in FINAL_STATES:
        raise ValueError(f"not a final state: {state}")
    now = utcnow()
    artifact = (
        {"model_key": model.key, "model_bytes": model.size, "model_sha256": model.sha256} if model else {}
    )
    return _leave_lease(
        s,
        job_id,
        owner,
        cpu_seconds,
        state=state,
        result=result,
        error=error,
        finished_at=now,
        updated_at=now,
        **artifact,
    )


def pause(
    s: Session, job_id: int, owner: str, *, result: dict[str, Any], cpu_seconds: float | None = None
) -> bool:
    """running → paused by the lease owner: a search study's screening run reached its ASHA rung
    (``result`` is the run's result there). Its checkpoint stays; the search step promotes it
    (:func:`resume_paused`) or stops it (:func:`stop_paused`). False if the lease was lost."""
    return _leave_lease(s, job_id, owner, cpu_seconds, state="paused", result=result, updated_at=utcnow())


def _leave_lease(s: Session, job_id: int, owner: str, cpu_seconds: float | None, **values: Any) -> bool:
    """The lease owner's last write to its running job (:func:`finish`, :func:`pause`): ``values``
    and the lease given up in one compare-and-set, ``cpu_seconds`` only when measured (an unmeasured
    run keeps what earlier attempts recorded), and pollers told. False if the lease was lost."""
    if not _update_owned(
        s,
        job_id,
        owner,
        lease_owner=None,
        lease_expires_at=None,
        **values,
        **({} if cpu_seconds is None else {"cpu_seconds": cpu_seconds}),
    ):
        return False
    study_id = s.scalar(select(Job.study_id).where(Job.id == job_id))
    assert study_id is not None
    bump_study(s, study_id)
    return True


def set_target(s: Session, job_ids: list[int], target_epochs: int) -> list[int]:
    """A promotion's jobs: record the rung's epochs in each job's ``config["target_epochs"]`` and put
    the paused ones back in the queue (``attempts`` from zero: each rung is a new delivery, not a
    retry; ``enqueued_at`` cleared, so the sweep sends them if the caller's send fails). A job that
    already ended (its trainer stopped on its own, or it failed) keeps its state: the promotion
    costs nothing. Returns the ids queued again."""
    now = utcnow()
    queued: list[int] = []
    for job in s.scalars(select(Job).where(Job.id.in_(job_ids))).all():
        job.config = {**(job.config or {}), "target_epochs": int(target_epochs)}
        job.updated_at = now
        if job.state == "paused":
            job.state, job.attempts, job.enqueued_at, job.finished_at = "queued", 0, None, None
            queued.append(job.id)
        bump_study(s, job.study_id)
    return queued


def stop_paused(s: Session, job_ids: list[int]) -> None:
    """paused → stopped (final): the search ended and ASHA never promoted these runs."""
    if not job_ids:
        return
    now = utcnow()
    s.execute(
        update(Job)
        .where(Job.id.in_(job_ids), Job.state == "paused")
        .values(state="stopped", finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    for study_id in set(s.scalars(select(Job.study_id).where(Job.id.in_(job_ids))).all()):
        bump_study(s, study_id)


def request_cancel(s: Session, job_id: int) -> JobState:
    """Cancel a job: a queued or paused one ends at once, a running one at its next step. Returns
    the new state. (A cancelled ASHA run is never resumed: a promotion finds it ended.)"""
    now = utcnow()
    s.execute(
        update(Job)
        .where(Job.id == job_id, Job.state.in_(("queued", "paused")))
        .values(state="cancelled", cancel_requested=True, finished_at=now, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    s.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == "running")
        .values(cancel_requested=True, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    job = s.get(Job, job_id, populate_existing=True)
    assert job is not None
    bump_study(s, job.study_id)
    return job.state


def reap(s: Session, *, now: datetime | None = None) -> list[int]:
    """Requeue running jobs whose lease expired (their worker died); fail those out of attempts.

    Returns the ids put back in the queue (the caller sends their messages after commit).
    """
    now = now or utcnow()
    expired = and_(Job.state == "running", Job.lease_expires_at < now)
    # a job cancelled while its worker died ends cancelled (claim would refuse it forever)
    cancelled = s.scalars(select(Job.id).where(expired, Job.cancel_requested.is_(True))).all()
    for job_id in cancelled:
        s.execute(
            update(Job)
            .where(Job.id == job_id, expired)
            .values(
                state="cancelled", finished_at=now, updated_at=now, lease_owner=None, lease_expires_at=None
            )
            .execution_options(synchronize_session=False)
        )
    out_of_attempts = s.scalars(select(Job.id).where(expired, Job.attempts >= Job.max_attempts)).all()
    for job_id in out_of_attempts:
        s.execute(
            update(Job)
            .where(Job.id == job_id, expired)
            .values(
                state="failed",
                error="worker lost: the job's lease expired on every attempt (see the worker logs)",
                finished_at=now,
                updated_at=now,
                lease_owner=None,
            )
            .execution_options(synchronize_session=False)
        )
    requeued: list[int] = []
    for job_id in s.scalars(select(Job.id).where(expired, Job.attempts < Job.max_attempts)).all():
        res = s.execute(
            update(Job)
            .where(Job.id == job_id, expired)
            .values(state="queued", lease_owner=None, lease_expires_at=None, enqueued_at=None, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        if res.rowcount == 1:  # type: ignore[attr-defined]
            requeued.append(job_id)
    for job_id in [*cancelled, *out_of_attempts, *requeued]:
        study_id = s.scalar(select(Job.study_id).where(Job.id == job_id))
        if study_id is not None:
            bump_study(s, study_id)
    return requeued


def unsent(s: Session, limit: int = 1000) -> list[tuple[int, str]]:
    """Queued jobs with no message in the broker yet (enqueue failed or reaped): ``(id, kind)``."""
    rows = s.execute(
        select(Job.id, Job.kind)
        .where(Job.state == "queued", Job.enqueued_at.is_(None))
        .order_by(Job.id)
        .limit(limit)
    ).all()
    return [(r[0], r[1]) for r in rows]


def mark_enqueued(s: Session, job_ids: list[int]) -> None:
    if job_ids:
        s.execute(
            update(Job)
            .where(Job.id.in_(job_ids), Job.state == "queued")
            .values(enqueued_at=utcnow())
            .execution_options(synchronize_session=False)
        )


def worker_seen(s: Session, name: str, pid: int, device: str) -> None:
    now = utcnow()
    row = s.get(WorkerSeen, name)
    if row is None:
        s.add(WorkerSeen(name=name, pid=pid, device=device, started_at=now, last_seen=now))
    else:
        row.pid, row.device, row.last_seen = pid, device, now


def worker_gone(s: Session, name: str) -> None:
    s.execute(delete(WorkerSeen).where(WorkerSeen.name == name))


def live_workers(s: Session, within_s: float) -> list[WorkerSeen]:
    since = utcnow() - timedelta(seconds=within_s)
    return list(s.scalars(select(WorkerSeen).where(WorkerSeen.last_seen >= since)).all())


def lost_messages(s: Session, queue_length: int | None, grace_s: float = 30.0) -> list[tuple[int, str]]:
    """Queued jobs that have no message any more: the broker's queue is empty but they were sent
    more than ``grace_s`` ago (longer than a worker holds a prefetched message before claiming it).

    Marks them as sent now (so one pass re-sends each once) and returns ``(id, kind)``.
    """
    if queue_length is None or queue_length > 0:
        return []
    cutoff = utcnow() - timedelta(seconds=grace_s)
    rows = s.execute(
        select(Job.id, Job.kind)
        .where(Job.state == "queued", Job.enqueued_at.is_not(None), Job.enqueued_at < cutoff)
        .order_by(Job.id)
        .limit(1000)
    ).all()
    ids = [r[0] for r in rows]
    if ids:
        s.execute(
            update(Job)
            .where(Job.id.in_(ids), Job.state == "queued")
            .values(enqueued_at=utcnow())
            .execution_options(synchronize_session=False)
        )
    return [(r[0], r[1]) for r in rows]


def claimable(s: Session, job_id: int) -> bool:
    """Whether :func:`claim` could take the job now (the check a worker's main process makes before
    spending a job process on a message: cancelled, finished and duplicate messages are dropped)."""
    return (
        s.scalar(
            select(Job.id).where(
                Job.id == job_id,
                Job.state == "queued",
                Job.cancel_requested.is_(False),
                Job.attempts < Job.max_attempts,
            )
        )
        is not None
    )


def keep_sent(s: Session, job_ids: list[int]) -> None:
    """Queued jobs whose message a live worker holds (prefetched, waiting for a job process):
    their message exists, so :func:`lost_messages` must not count them (``enqueued_at`` = now)."""
    if job_ids:
        s.execute(
            update(Job)
            .where(Job.id.in_(job_ids), Job.state == "queued", Job.enqueued_at.is_not(None))
            .values(enqueued_at=utcnow())
            .execution_options(synchronize_session=False)
        )


def queued_of(s: Session, job_ids: list[int]) -> list[tuple[int, str]]:
    """Those of ``job_ids`` still queued (claimed by no process): ``(id, kind)``."""
    if not job_ids:
        return []
    rows = s.execute(
        select(Job.id, Job.kind).where(Job.id.in_(job_ids), Job.state == "queued").order_by(Job.id)
    ).all()
    return [(r[0], r[1]) for r in rows]


def claim_promotion_check(s: Session, study_id: int, resend_after_s: float) -> bool:
    """Whether the caller sends the study's promotion check now: a compare-and-set on
    ``studies.promotion_check_at``, True for one caller per ``resend_after_s`` and study, and never
    once the study has auto-promoted. A check whose message is lost is not lost work: the workers'
    maintenance pass runs the same check."""
    now = utcnow()
    res = s.execute(
        update(Study)
        .where(
            Study.id == study_id,
            Study.auto_promoted_at.is_(None),
            or_(
                Study.promotion_check_at.is_(None),
                Study.promotion_check_at < now - timedelta(seconds=resend_after_s),
            ),
        )
        .values(promotion_check_at=now)
        .execution_options(synchronize_session=False)
    )
    return res.rowcount == 1  # type: ignore[attr-defined]


def release(s: Session, job_id: int, owner: str, reason: str | None = None) -> bool:
    """running → queued by the lease owner, the attempt not counted: the job stopped on purpose
    (its worker is shutting down, or the disk is full) and resumes from its checkpoint later.

    ``enqueued_at`` is cleared, so the maintenance sweep sends a new message if the caller's
    fails. ``reason`` is kept in ``error`` until the job is claimed again. False if not owner.
    """
    if not _update_owned(
        s,
        job_id,
        owner,
        state="queued",
        attempts=Job.attempts - 1,  # the claim counted it; a running job has attempts >= 1
        lease_owner=None,
        lease_expires_at=None,
        enqueued_at=None,
        error=reason,
        updated_at=utcnow(),
    ):
        return False
    study_id = s.scalar(select(Job.study_id).where(Job.id == job_id))
    if study_id is not None:
        bump_study(s, study_id)
    return True


def defer(s: Session, job_id: int, reason: str) -> None:
    """Leave a queued job unclaimed for now (the disk is still full): the sweep re-sends it later."""
    s.execute(
        update(Job)
        .where(Job.id == job_id, Job.state == "queued")
        .values(enqueued_at=None, error=reason, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


@dataclass(frozen=True)
class JobStats:
    """What ``/metrics`` reports: job counts by ``(kind, state)`` and finished jobs' training times."""

    counts: dict[tuple[JobKind, JobState], int]
    elapsed_s: dict[JobKind, list[float]]


def job_stats(s: Session) -> JobStats:
    """Every tenant's job counts and finished jobs' ``elapsed_s``, by kind (read at scrape time)."""
    counts = {
        (k, st): n
        for k, st, n in s.execute(select(Job.kind, Job.state, func.count()).group_by(Job.kind, Job.state))
    }
    elapsed: dict[JobKind, list[float]] = {}
    for kind, e in s.execute(select(Job.kind, Job.elapsed_s).where(Job.finished_at.is_not(None))):
        elapsed.setdefault(kind, []).append(e)
    return JobStats(counts=counts, elapsed_s=elapsed)

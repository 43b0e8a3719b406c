"""Per-tenant usage, read for the limits the API enforces (docs/reliability.md)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.orm import Session

from archscreen.core.names import ACTIVE_STATES
from archscreen.store.models import Candidate, Job, Study, Tenant


def lock_tenant(s: Session, tenant_id: int) -> None:
    """Serialise this tenant's quota-checked writes until the session's transaction ends.

    A limit read and the insert it allows must be one step, or concurrent requests each see room
    for one more and all insert. PostgreSQL: a row lock on the tenant (``SELECT ... FOR UPDATE``);
    in READ COMMITTED each later statement reads what the previous holder committed. SQLite has
    no row locks: a no-op ``UPDATE`` opens the write transaction (the database's one write lock,
    waited for under ``busy_timeout``) before anything is read, so the reads that follow see every
    committed write and no other writer can slip in before this transaction commits.
    """
    if s.get_bind().dialect.name == "sqlite":
        tenants = cast(Table, Tenant.__table__)  # Core, not ORM: no synchronising SELECT first
        s.execute(update(tenants).where(tenants.c.id == tenant_id).values(id=tenants.c.id))
    else:
        s.execute(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update())


def active_jobs(s: Session, tenant_id: int) -> int:
    """Jobs of this tenant that are queued or running."""
    q = (
        select(func.count())
        .select_from(Job)
        .join(Study, Study.id == Job.study_id)
        .where(Study.tenant_id == tenant_id, Job.state.in_(ACTIVE_STATES))
    )
    return int(s.scalar(q) or 0)


def new_spec_hashes(s: Session, study_id: int, hashes: list[str]) -> set[str]:
    """Those of ``hashes`` that the study does not hold yet (a re-submission adds nothing)."""
    if not hashes:
        return set()
    known = set(
        s.scalars(
            select(Candidate.spec_hash).where(Candidate.study_id == study_id, Candidate.spec_hash.in_(hashes))
        )
    )
    return set(hashes) - known


def _dir_bytes(path: Path) -> int:
    total = 0
    try:
        entries = list(os.scandir(path))
    except OSError:
        return 0
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                total += _dir_bytes(Path(entry.path))
            else:
                total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total


# tenant id -> (monotonic time, bytes): a submission does not walk every job folder every time
_artifact_cache: dict[tuple[str, int], tuple[float, int]] = {}


def model_bytes(s: Session, tenant_id: int) -> int:
    """Bytes of the tuned-model files this tenant's jobs put into the model store, each distinct
    file once (the store is content-addressed: two jobs that wrote the same bytes share a file)."""
    per_file = (
        select(func.max(Job.model_bytes).label("size"))
        .join(Study, Study.id == Job.study_id)
        .where(Study.tenant_id == tenant_id, Job.model_sha256.is_not(None))
        .group_by(Job.model_sha256)
        .subquery()
    )
    return int(s.scalar(select(func.coalesce(func.sum(per_file.c.size), 0))) or 0)


def artifact_bytes(s: Session, tenant_id: int, artifacts_dir: Path, *, max_age_s: float = 30.0) -> int:
    """Bytes this tenant stores: everything under ``artifacts_dir/jobs/<id>`` for its jobs (run
    checkpoints, logs) plus its tuned-model files (:func:`model_bytes`, read from the jobs' rows,
    which also counts them in an object store). Cached ``max_age_s``."""
    key = (str(artifacts_dir), tenant_id)
    hit = _artifact_cache.get(key)
    if hit is not None and time.monotonic() - hit[0] < max_age_s:
        return hit[1]
    ids = s.scalars(select(Job.id).join(Study, Study.id == Job.study_id).where(Study.tenant_id == tenant_id))
    jobs_dir = artifacts_dir / "jobs"
    total = sum(_dir_bytes(jobs_dir / str(job_id)) for job_id in ids) + model_bytes(s, tenant_id)
    _artifact_cache[key] = (time.monotonic(), total)
    return total

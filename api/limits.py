"""Per-tenant limits, checked before anything is stored (docs/reliability.md).

Past a limit the answer is 429 (active jobs: retry when some have finished) or 413 (a study's
candidates, a tenant's stored artifacts), with the limit and the current usage in the body.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from archscreen.settings import Settings
from archscreen.store import Tenant, quotas
from archscreen.store.records import StudyRecord


class LimitExceeded(Exception):
    def __init__(self, status: int, detail: str, limit: int, current: int) -> None:
        super().__init__(detail)
        self.status, self.detail, self.limit, self.current = status, detail, limit, current


def check_new_jobs(
    s: Session, settings: Settings, tenant: Tenant, new_jobs: int, *, flushed: bool = False
) -> None:
    """Refuse work that would take the tenant past its active-job or artifact-storage limit.

    ``flushed``: the new jobs are already in the session (the caller rolls back on a refusal).
    """
    if new_jobs <= 0:
        return
    active = quotas.active_jobs(s, tenant.id) - (new_jobs if flushed else 0)
    limit = settings.max_active_jobs_per_tenant
    if active + new_jobs > limit:
        raise LimitExceeded(
            429,
            f"this would make {active + new_jobs} queued or running jobs; the tenant's limit is {limit} "
            "(ARCHSCREEN_MAX_ACTIVE_JOBS_PER_TENANT): retry when some have finished",
            limit,
            active,
        )
    stored = quotas.artifact_bytes(s, tenant.id, settings.resolved_artifacts_dir)
    cap = settings.max_artifact_bytes_per_tenant
    if stored >= cap:
        raise LimitExceeded(
            413,
            f"the tenant's stored artifacts take {stored:,} bytes; the limit is {cap:,} "
            "(ARCHSCREEN_MAX_ARTIFACT_BYTES_PER_TENANT): delete studies or raise the limit",
            cap,
            stored,
        )


def check_candidates(
    s: Session, settings: Settings, tenant: Tenant, study: StudyRecord, hashes: list[str]
) -> None:
    """Refuse candidates that would take the study past its size, or the tenant past its job limits."""
    new = quotas.new_spec_hashes(s, study.id, hashes)
    if not new:
        return
    from archscreen.store import studies as study_store

    have = study_store.candidate_counts(s, [study.id])[study.id]
    limit = settings.max_candidates_per_study
    if have + len(new) > limit:
        raise LimitExceeded(
            413,
            f"the study would hold {have + len(new)} candidates; the limit is {limit} "
            "(ARCHSCREEN_MAX_CANDIDATES_PER_STUDY)",
            limit,
            have,
        )
    check_new_jobs(s, settings, tenant, len(new) * len(study.screening.seeds))

"""Per-tenant limits, checked before anything is stored (docs/reliability.md).

Past a limit the answer is 429 (active jobs: retry when some have finished; uploads: retry when a
validation slot is free) or 413 (a study's candidates, a tenant's stored artifacts), with the limit
and the current usage in the body.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.orm import Session

from archscreen.settings import Settings
from archscreen.store import Tenant, quotas
from archscreen.store.records import StudyRecord

log = logging.getLogger("archscreen.api")


class LimitExceeded(Exception):
    """A 413 or 429; a 429 carries ``Retry-After: retry_after_s``."""

    def __init__(self, status: int, detail: str, limit: int, current: int, retry_after_s: int = 60) -> None:
        super().__init__(detail)
        self.status, self.detail, self.limit, self.current = status, detail, limit, current
        self.retry_after_s = retry_after_s


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


# ---------------------------------------------------------------------------- uploads

# An upload takes seconds to validate: a refused client retries soon.
VALIDATION_RETRY_AFTER_S = 5


def host_validation_slots(settings: Settings) -> int:
    """``max_concurrent_validations``, lowered where that many validation children, each under
    ``dataset_check_memory_bytes`` of address space, could take more than half the host's memory
    (never below one)."""
    import psutil

    configured = settings.max_concurrent_validations
    fits = max(1, psutil.virtual_memory().total // 2 // settings.dataset_check_memory_bytes)
    if fits < configured:
        log.warning(
            "ARCHSCREEN_MAX_CONCURRENT_VALIDATIONS=%d validations of %d bytes each would pass half of "
            "this host's memory: at most %d at once",
            configured,
            settings.dataset_check_memory_bytes,
            fits,
        )
    return int(min(configured, fits))


class ValidationSlots:
    """How many uploads are streamed and validated at once: at most ``per_host`` on this host and
    ``per_tenant`` for one tenant; past either, :class:`LimitExceeded` (429, ``Retry-After``).

    Refused, not queued: a queued upload would hold its connection and its temporary file while
    it waits, and the client (``archscreen dataset upload``, a script) can retry on its own.

    A slot is an exclusive ``flock`` on a file in ``folder`` (``data_dir/validation-slots``), so
    every API process of the host (``ARCHSCREEN_API_WORKERS``) counts the same slots, and the
    kernel frees the slot of a process that dies. A slot is held from the first byte of the body
    to the end of validation.
    """

    def __init__(self, folder: Path, per_host: int, per_tenant: int) -> None:
        self.folder, self.per_host, self.per_tenant = folder, per_host, per_tenant
        folder.mkdir(parents=True, exist_ok=True)

    def _take(self, prefix: str, count: int) -> int | None:
        """The descriptor of the first free slot file ``prefix-<i>.lock``, locked; None when all are held."""
        for i in range(count):
            fd = os.open(self.folder / f"{prefix}-{i}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return fd
        return None

    @contextlib.contextmanager
    def hold(self, tenant_id: int) -> Iterator[None]:
        held: list[int] = []
        try:
            tenant_fd = self._take(f"tenant-{tenant_id}", self.per_tenant)
            if tenant_fd is None:
                raise self._busy(
                    f"the tenant has {self.per_tenant} uploads being validated; the limit is "
                    f"{self.per_tenant} (ARCHSCREEN_MAX_CONCURRENT_VALIDATIONS_PER_TENANT)",
                    self.per_tenant,
                )
            held.append(tenant_fd)
            host_fd = self._take("host", self.per_host)
            if host_fd is None:
                raise self._busy(
                    f"{self.per_host} uploads are being validated on this server; the limit is "
                    f"{self.per_host} (ARCHSCREEN_MAX_CONCURRENT_VALIDATIONS)",
                    self.per_host,
                )
            held.append(host_fd)
            yield
        finally:
            for fd in held:
                os.close(fd)  # closing the descriptor drops its lock

    @staticmethod
    def _busy(detail: str, limit: int) -> LimitExceeded:
        return LimitExceeded(
            429,
            f"{detail}: retry in {VALIDATION_RETRY_AFTER_S} s",
            limit,
            limit,
            retry_after_s=VALIDATION_RETRY_AFTER_S,
        )

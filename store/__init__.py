"""Persistence: SQLAlchemy models, the session context and every query the API and workers run.

The only package that knows SQL. The database is the source of truth for job
state; Celery messages carry ids only.
"""

from archscreen.store.db import Database, SchemaOutOfDate, utcnow
from archscreen.store.models import (
    ACTIVE_STATES,
    FINAL_STATES,
    JOB_STATES,
    ApiToken,
    Base,
    Candidate,
    EpochMetric,
    IdempotencyKey,
    Job,
    JobState,
    Study,
    Tenant,
    WorkerSeen,
)

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "JOB_STATES",
    "ApiToken",
    "Base",
    "Candidate",
    "Database",
    "EpochMetric",
    "IdempotencyKey",
    "Job",
    "JobState",
    "SchemaOutOfDate",
    "Study",
    "Tenant",
    "WorkerSeen",
    "utcnow",
]

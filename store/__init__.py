"""Persistence: SQLAlchemy models, the session context and every query the API and workers run.

The only package that knows SQL. The database is the source of truth for job
state; Celery messages carry ids only. Studies, candidates, jobs and curves leave this package
as the frozen records of :mod:`archscreen.store.records` (a study with its typed config); the
ORM models are exported for the migrations, the tests and the remaining rows (tenants,
datasets, workers).
"""

from archscreen.core.names import ACTIVE_STATES, FINAL_STATES, JOB_STATES, JobState
from archscreen.store.db import Database, SchemaOutOfDate, utcnow
from archscreen.store.models import (
    ApiToken,
    Base,
    Candidate,
    EpochMetric,
    IdempotencyKey,
    Job,
    Study,
    Tenant,
    WorkerSeen,
)
from archscreen.store.records import CandidateBrief, CandidateRecord, EpochRecord, JobRecord, StudyRecord

__all__ = [
    "ACTIVE_STATES",
    "FINAL_STATES",
    "JOB_STATES",
    "ApiToken",
    "Base",
    "Candidate",
    "CandidateBrief",
    "CandidateRecord",
    "Database",
    "EpochMetric",
    "EpochRecord",
    "IdempotencyKey",
    "Job",
    "JobRecord",
    "JobState",
    "SchemaOutOfDate",
    "Study",
    "StudyRecord",
    "Tenant",
    "WorkerSeen",
    "utcnow",
]

"""jobs.cpu_seconds (the CPU time its process spent on it), studies.search_stopped_at (issue 29)

A search study's budget (search.budget_cpu_s) is the sum over its jobs. Existing jobs get 0 (their
CPU time was not measured). search_stopped_at: when the owner stopped a search (no trial is asked
after it).

Revision ID: 0008_job_cpu_seconds
Revises: 0007_asha
Create Date: 2026-12-06 21:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_job_cpu_seconds"
down_revision = "0007_asha"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("cpu_seconds", sa.Float(), nullable=False, server_default="0"))
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("search_stopped_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("search_stopped_at")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("cpu_seconds")

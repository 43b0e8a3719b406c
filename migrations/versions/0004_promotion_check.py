"""studies.promotion_check_at: when a cancel last sent the study's promotion check (issue 25)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06 18:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("promotion_check_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("promotion_check_at")

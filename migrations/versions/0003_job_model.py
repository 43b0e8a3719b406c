"""job model artifact: a succeeded tuning job's best-epoch weights in the blob store

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 11:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot drop columns in place (the downgrade), so both directions use it
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("model_key", sa.String(length=300), nullable=True))
        batch.add_column(sa.Column("model_bytes", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("model_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("model_sha256")
        batch.drop_column("model_bytes")
        batch.drop_column("model_key")

"""search studies (issue 29): studies.space/search/search_step_at, candidates.params, search_trials

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 19:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("space", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("search", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("search_step_at", sa.DateTime(), nullable=True))
    with op.batch_alter_table("candidates") as batch:
        batch.add_column(sa.Column("params", sa.JSON(), nullable=True))
    op.create_table(
        "search_trials",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("study_id", sa.Integer(), sa.ForeignKey("studies.id", ondelete="CASCADE"), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column(
            "candidate_id", sa.Integer(), sa.ForeignKey("candidates.id", ondelete="CASCADE"), nullable=True
        ),
        sa.Column("told", sa.String(length=16), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("refused", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.UniqueConstraint("study_id", "number", name="uq_search_trials_study_number"),
    )
    op.create_index("ix_search_trials_study_id", "search_trials", ["study_id"])


def downgrade() -> None:
    op.drop_index("ix_search_trials_study_id", table_name="search_trials")
    op.drop_table("search_trials")
    with op.batch_alter_table("candidates") as batch:
        batch.drop_column("params")
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("search_step_at")
        batch.drop_column("search")
        batch.drop_column("space")

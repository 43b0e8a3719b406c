"""dataset options: a table's preprocessing options are part of what makes a dataset

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 18:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"  # 0004_promotion_check: both were written as 0004 in parallel, chained here
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch mode: SQLite cannot alter constraints in place; existing rows get "" (no preprocessing)
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("options_key", sa.String(length=64), server_default="", nullable=False))
        batch.drop_constraint("uq_datasets_tenant_sha_label", type_="unique")
        batch.create_unique_constraint(
            "uq_datasets_tenant_sha_label_options", ["tenant_id", "sha256", "label_column", "options_key"]
        )


def downgrade() -> None:
    # Before 0005 one file and label column made one dataset: refuse (rather than delete a dataset
    # a study may use) while a file is stored with two option sets.
    twice = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT min(id), max(id) FROM datasets GROUP BY tenant_id, sha256, label_column "
                "HAVING count(*) > 1"
            )
        )
        .first()
    )
    if twice is not None:
        raise RuntimeError(
            f"datasets {twice[0]} and {twice[1]} are the same file with other preprocessing options; "
            "delete one (DELETE /api/v1/datasets/{id}) before downgrading below 0005"
        )
    with op.batch_alter_table("datasets") as batch:
        batch.drop_constraint("uq_datasets_tenant_sha_label_options", type_="unique")
        batch.create_unique_constraint(
            "uq_datasets_tenant_sha_label", ["tenant_id", "sha256", "label_column"]
        )
        batch.drop_column("options_key")

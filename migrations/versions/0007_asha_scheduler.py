"""ASHA across a search study's trials (issue 29, item 3): studies.asha, the scheduler's state

The job states ``paused`` and ``stopped`` need no schema change (``jobs.state`` is a plain string
column without a CHECK constraint). Search studies created before this revision keep one full run
per trial: their ``search`` JSON gets ``asha: {enabled: false}`` (the new default is on, and
switching a running search to ASHA half-way would rank runs of different lengths together).
The downgrade removes the ``asha`` key again (the older SearchConfig refuses unknown keys) and puts
paused/stopped screening runs in the states the older code knows: a paused run back to ``queued``
(it resumes from its checkpoint and trains to the end of its budget), a stopped one to
``cancelled``.

Revision ID: 0007_asha
Revises: 0006
Create Date: 2026-12-06 21:45:00
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0007_asha"
down_revision = "0006"
branch_labels = None
depends_on = None

_studies = sa.table("studies", sa.column("id", sa.Integer), sa.column("search", sa.JSON))
_jobs = sa.table("jobs", sa.column("state", sa.String), sa.column("enqueued_at", sa.DateTime))


def _rewrite_search(change: Any) -> None:
    conn = op.get_bind()
    for sid, search in conn.execute(sa.select(_studies.c.id, _studies.c.search)).all():
        if isinstance(search, str):  # a driver that hands JSON back as text
            search = json.loads(search)
        if not isinstance(search, dict):
            continue
        new = change(dict(search))
        if new != search:
            conn.execute(sa.update(_studies).where(_studies.c.id == sid).values(search=new))


def upgrade() -> None:
    with op.batch_alter_table("studies") as batch:
        batch.add_column(sa.Column("asha", sa.JSON(), nullable=True))

    def off(search: dict[str, Any]) -> dict[str, Any]:
        return search if "asha" in search else {**search, "asha": {"enabled": False}}

    _rewrite_search(off)


def downgrade() -> None:
    _rewrite_search(lambda search: {k: v for k, v in search.items() if k != "asha"})
    op.execute(sa.update(_jobs).where(_jobs.c.state == "paused").values(state="queued", enqueued_at=None))
    op.execute(sa.update(_jobs).where(_jobs.c.state == "stopped").values(state="cancelled"))
    with op.batch_alter_table("studies") as batch:
        batch.drop_column("asha")

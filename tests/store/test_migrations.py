"""Alembic: up / down / up on every backend, the models match the migrations, the schema check."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from archscreen.store import Base, Database, SchemaOutOfDate

TABLES = {
    "tenants",
    "api_tokens",
    "studies",
    "candidates",
    "jobs",
    "epoch_metrics",
    "idempotency_keys",
    "workers",
    "datasets",
}


def test_up_down_up(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    assert set(inspect(db.engine).get_table_names()) >= TABLES
    assert db.current_revision() == db.head_revision()
    db.downgrade("base")
    assert not (TABLES & set(inspect(db.engine).get_table_names()))
    assert db.current_revision() is None
    db.migrate()
    assert set(inspect(db.engine).get_table_names()) >= TABLES
    db.dispose()


def test_datasets_revision_downgrades_alone(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    db.downgrade("0001")
    assert "datasets" not in inspect(db.engine).get_table_names()
    assert "studies" in inspect(db.engine).get_table_names()
    db.migrate()
    assert "datasets" in inspect(db.engine).get_table_names()
    db.dispose()


def test_models_match_migrations(migrated: Database) -> None:
    with migrated.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_schema_check_names_the_command(database_url: str) -> None:
    db = Database(database_url)
    with pytest.raises(SchemaOutOfDate, match=r"never migrated.*run `archscreen migrate`"):
        db.check_schema()
    db.migrate()
    db.check_schema()
    db.dispose()

"""Optuna's storage: ``migrate()`` creates its tables, apart from archscreen's, on every backend."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, inspect, make_url, text

from archscreen.store import Database
from archscreen.store.optuna_storage import OPTUNA_SCHEMA, optuna_storage

# a few of Optuna's tables; version_info and alembic_version are the rows two processes raced to insert
OPTUNA_TABLES = {"studies", "trials", "version_info", "alembic_version"}


def _optuna_tables(database_url: str) -> tuple[set[str], int]:
    """Optuna's table names where the storage keeps them, read without opening the storage (which
    would create them), and how many rows its ``version_info`` has (0 when the table is missing)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        optuna_db = path.with_name(f"{path.stem}-optuna.db")
        if not optuna_db.exists():
            return set(), 0
        engine = create_engine(url.set(database=str(optuna_db)))
        schema = None
    else:
        engine, schema = create_engine(url), OPTUNA_SCHEMA
    try:
        names = set(inspect(engine).get_table_names(schema=schema))
        if "version_info" not in names:
            return names, 0
        table = "version_info" if schema is None else f"{schema}.version_info"
        with engine.connect() as conn:
            return names, int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())
    finally:
        engine.dispose()


def test_migrate_creates_optunas_tables_apart_from_archscreens(database_url: str) -> None:
    assert _optuna_tables(database_url) == (set(), 0)
    db = Database(database_url)
    db.migrate()
    names, versions = _optuna_tables(database_url)
    assert names >= OPTUNA_TABLES and versions == 1
    # archscreen's own schema has no Optuna table but its own studies and alembic_version
    assert not ({"trials", "version_info"} & set(inspect(db.engine).get_table_names()))
    db.migrate()  # again: the tables exist, nothing is stamped twice
    assert _optuna_tables(database_url)[1] == 1
    storage = optuna_storage(database_url)  # what the API and the workers open
    assert storage.get_all_studies() == []
    storage.engine.dispose()
    db.dispose()

"""Optuna's RDB storage in the service's database server, for the search studies (issue 29).

Optuna's tables live beside archscreen's, never among them (Optuna also has a table named
``studies`` and its own ``alembic_version``): on PostgreSQL in the schema :data:`OPTUNA_SCHEMA` of
the same database; on SQLite, which has no schemas, in a file beside the database
(``<name>-optuna.db``). Alembic's checks therefore never see them.

:meth:`archscreen.store.Database.migrate` creates them right after archscreen's own revisions, so
the API's search view and the workers only ever open tables that exist.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    import optuna

log = logging.getLogger("archscreen.store")

OPTUNA_SCHEMA = "archscreen_optuna"


@functools.lru_cache(maxsize=8)
def optuna_storage(database_url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage for the service's database (one per process and URL).

    Opened once more if another process was creating its tables at the same moment: both stamp
    Optuna's ``alembic_version``, and the loser's insert fails (the API's search view and a
    worker's first step raced so in CI: a 500). ``migrate()`` now creates the tables before either
    runs, so this is a backstop for a database last migrated before it did, whose Optuna tables are
    still created on first use.
    """
    from sqlalchemy.exc import IntegrityError, OperationalError

    try:
        return _open(database_url)
    except (IntegrityError, OperationalError):
        log.info("Optuna's tables were being created by another process; opening them again")
        return _open(database_url)


def create_optuna_tables(database_url: str) -> None:
    """Create Optuna's schema (PostgreSQL) or file (SQLite) and tables unless they exist.

    Opening the storage is what creates them; the storage itself is not kept, so the migrating
    process holds no connection afterwards. Optuna lowers the ``alembic`` logger to WARNING when it
    opens its storage; the level is restored so that a caller's own Alembic logging is unchanged.
    """
    alembic_log = logging.getLogger("alembic")
    level = alembic_log.level
    try:
        _open(database_url).engine.dispose()
    finally:
        alembic_log.setLevel(level)


def _open(database_url: str) -> optuna.storages.RDBStorage:
    import optuna

    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "archscreen.db")
        optuna_url = url.set(database=str(path.with_name(f"{path.stem}-optuna.db")))
        return optuna.storages.RDBStorage(optuna_url.render_as_string(hide_password=False))
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {OPTUNA_SCHEMA}"))
    engine.dispose()
    return optuna.storages.RDBStorage(
        url.render_as_string(hide_password=False),
        engine_kwargs={"connect_args": {"options": f"-csearch_path={OPTUNA_SCHEMA}"}},
    )

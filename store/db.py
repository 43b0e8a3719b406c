"""Engine, the one session context, and the schema check (Alembic)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker


def utcnow() -> datetime:
    """Naive UTC: the same representation on SQLite and PostgreSQL (``timestamp without time zone``)."""
    return datetime.now(UTC).replace(tzinfo=None)


class SchemaOutOfDate(RuntimeError):
    """The database schema is not the one this code needs; the message says which command fixes it."""


def migrations_dir() -> Path:
    return Path(str(resources.files("archscreen.migrations")))


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    # '%' is interpolation syntax in alembic's ini parser
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # WAL lets the API read while a worker writes; busy_timeout waits for the write lock
    # instead of failing with "database is locked" when several worker processes write.
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


class Database:
    """One engine and session factory per process (create after fork in workers)."""

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        connect_timeout_s: float | None = None,
        pool_timeout_s: float | None = None,
    ) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        # JSON columns (results, curves' extras, configs) parsed by orjson: the read path's largest
        # single cost after row handling (stored by the stdlib, so what is written is unchanged)
        kwargs: dict[str, Any] = {"echo": echo, "future": True, "json_deserializer": orjson.loads}
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=10, max_overflow=20)
            # bounded waits, so an outage is a quick error (the API answers 503) rather than a hang
            if connect_timeout_s is not None:
                kwargs["connect_args"] = {"connect_timeout": max(1, round(connect_timeout_s))}
            if pool_timeout_s is not None:
                kwargs["pool_timeout"] = pool_timeout_s
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: commits on success, rolls back on error."""
        s = self._factory()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    # -- schema ----------------------------------------------------------------

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str:
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(alembic_config(self.url)).get_current_head()
        assert head is not None
        return head

    def check_schema(self) -> None:
        """Raise :class:`SchemaOutOfDate` unless the database is at the code's head revision."""
        current, head = self.current_revision(), self.head_revision()
        if current != head:
            where = "empty (never migrated)" if current is None else f"at revision {current}"
            raise SchemaOutOfDate(
                f"the database schema is {where}; this archscreen needs revision {head}: "
                "run `archscreen migrate` (with the same ARCHSCREEN_DATABASE_URL / --data-dir)"
            )

    def migrate(self, revision: str = "head") -> None:
        from alembic import command

        command.upgrade(alembic_config(self.url), revision)

    def downgrade(self, revision: str) -> None:
        from alembic import command

        command.downgrade(alembic_config(self.url), revision)

    def dispose(self) -> None:
        self.engine.dispose()

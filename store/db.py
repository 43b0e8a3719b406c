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


def _bounded_connection_class(io_timeout_s: float) -> Any:
    """A psycopg connection whose every wait on the server (query, fetch, commit, ping) ends after
    ``io_timeout_s``: the connection is then closed, so SQLAlchemy sees a disconnect, drops its
    pool and the API answers 503.

    TCP keepalives and ``tcp_user_timeout`` end a connection to a host that stopped acknowledging;
    they cannot see a peer that acknowledges and never answers (a frozen proxy or server process),
    and ``statement_timeout`` is enforced by the very server that hangs. Only a client-side
    deadline bounds that case.
    """
    import psycopg
    from psycopg import errors as pg_errors

    class BoundedConnection(psycopg.Connection):
        def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
            # psycopg >= 3.2: wait(gen, interval, timeout) raises _WaitTimeout once timeout passes
            try:
                return super().wait(gen, interval=interval, timeout=timeout or io_timeout_s)
            except pg_errors._WaitTimeout:
                # the protocol state is unknown after an abandoned wait: never reuse the connection
                self.pgconn.finish()
                raise psycopg.OperationalError(
                    f"the database did not answer within {io_timeout_s:g} s (connection closed)"
                ) from None

    return BoundedConnection


def _postgres_connect_args(
    connect_timeout_s: float | None, io_timeout_s: float | None, statement_timeout_s: float | None
) -> dict[str, Any]:
    """libpq options: bounded connect, keepalives, and the server-side statement bound."""
    args: dict[str, Any] = {
        # a silent peer is found within keepalives_idle + interval * count seconds
        "keepalives": 1,
        "keepalives_idle": 10,
        "keepalives_interval": 3,
        "keepalives_count": 3,
    }
    if connect_timeout_s is not None:
        args["connect_timeout"] = max(2, round(connect_timeout_s))  # libpq's minimum is 2 s
    if io_timeout_s is not None:
        # sent data unacknowledged this long ends the connection (a host gone from the network)
        args["tcp_user_timeout"] = round(io_timeout_s * 1000)
    if statement_timeout_s is not None:
        args["options"] = f"-c statement_timeout={round(statement_timeout_s * 1000)}"
    return args


class Database:
    """One engine and session factory per process (create after fork in workers).

    On PostgreSQL, ``connect_timeout_s``, ``pool_timeout_s``, ``statement_timeout_s`` (server-side)
    and ``io_timeout_s`` (client-side: a wait on the server past it closes the connection) bound
    every database call, so a hung database is an error within seconds, not a hang.
    """

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        connect_timeout_s: float | None = None,
        pool_timeout_s: float | None = None,
        statement_timeout_s: float | None = None,
        io_timeout_s: float | None = None,
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
            kwargs["connect_args"] = _postgres_connect_args(
                connect_timeout_s, io_timeout_s, statement_timeout_s
            )
            if pool_timeout_s is not None:
                kwargs["pool_timeout"] = pool_timeout_s
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        elif io_timeout_s is not None and url.startswith("postgresql+psycopg:"):
            bounded = _bounded_connection_class(io_timeout_s)

            def connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
                return bounded.connect(*cargs, **cparams)

            event.listen(self.engine, "do_connect", connect)
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
        """Upgrade archscreen's schema, then create Optuna's tables (apart from it: see
        :mod:`archscreen.store.optuna_storage`), so that the API and the workers never race to
        create them on first use."""
        from alembic import command

        from archscreen.store.optuna_storage import create_optuna_tables

        command.upgrade(alembic_config(self.url), revision)
        create_optuna_tables(self.url)

    def downgrade(self, revision: str) -> None:
        from alembic import command

        command.downgrade(alembic_config(self.url), revision)

    def dispose(self) -> None:
        self.engine.dispose()

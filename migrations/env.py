"""Alembic environment: online migrations only, URL from the archscreen settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from archscreen.store.models import Base

config = context.config
url: str = config.get_main_option("sqlalchemy.url") or ""
if not url:
    from archscreen.settings import Settings

    url = Settings().resolved_database_url


def run_migrations_online() -> None:
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            # SQLite cannot ALTER most things: batch mode rebuilds the table (needed for downgrades).
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("archscreen migrations run online only: `archscreen migrate`")
run_migrations_online()

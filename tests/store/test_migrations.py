"""Alembic: up / down / up on every backend, the models match the migrations, the schema check."""

from __future__ import annotations

import json

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


def test_job_model_revision_downgrades_alone_and_keeps_the_jobs(database_url: str) -> None:
    from archscreen.store import jobs as job_store
    from archscreen.store import studies as study_store
    from archscreen.store.auth import get_or_create_tenant

    db = Database(database_url)
    db.migrate()
    with db.session() as s:
        tenant = get_or_create_tenant(s, "t")
        screening = {"max_epochs": 1, "patience": 1, "batch_size": 32, "seeds": [0], "base": "sgd"}
        study = study_store.create_study(
            s, tenant.id, name="s", dataset="mnist1d", policy={"top_k": 1}, screening=screening
        )
        _, _, jobs = study_store.add_candidate(
            s, study, name="c", spec={}, spec_hash="h", num_params=1, summary=[], max_attempts=3
        )
        job_id = jobs[0].id
        job_store.claim(s, job_id, "w", 30)
        model = job_store.ModelArtifact(key="models/ab/" + "ab" * 32, size=7, sha256="ab" * 32)
        assert job_store.finish(s, job_id, "w", "succeeded", result={"val_loss": 1.0}, model=model)
    columns = {c["name"] for c in inspect(db.engine).get_columns("jobs")}
    assert {"model_key", "model_bytes", "model_sha256"} <= columns
    db.downgrade("0002")
    columns = {c["name"] for c in inspect(db.engine).get_columns("jobs")}
    assert not {"model_key", "model_bytes", "model_sha256"} & columns
    with db.engine.connect() as conn:  # the rebuilt table (SQLite's batch copy) kept the row
        assert conn.exec_driver_sql(f"SELECT state FROM jobs WHERE id = {job_id}").scalar() == "succeeded"
    db.migrate()
    columns = {c["name"] for c in inspect(db.engine).get_columns("jobs")}
    assert {"model_key", "model_bytes", "model_sha256"} <= columns
    db.dispose()


def test_dataset_options_revision_downgrades_only_without_twins(database_url: str) -> None:
    from archscreen.store import datasets as dataset_store
    from archscreen.store.auth import get_or_create_tenant

    db = Database(database_url)
    db.migrate()
    common = {"name": "t", "format": "parquet", "label_column": "y", "sha256": "ab" * 32}
    blob = {"blob_sha256": "cd" * 32, "size_bytes": 1, "blob_bytes": 1, "facts": {}}
    with db.session() as s:
        tenant = get_or_create_tenant(s, "t")
        first, created = dataset_store.create(s, tenant.id, **common, **blob, options_key="1" * 64)
        twin, created_twin = dataset_store.create(s, tenant.id, **common, **blob, options_key="2" * 64)
    assert created and created_twin and first.id != twin.id
    with pytest.raises(RuntimeError, match=f"datasets {first.id} and {twin.id} are the same file"):
        db.downgrade("0004")
    with db.session() as s:
        dataset_store.delete(s, tenant.id, twin.id)
    db.downgrade("0004")
    assert "options_key" not in {c["name"] for c in inspect(db.engine).get_columns("datasets")}
    db.migrate()
    with db.session() as s:  # the row kept through both directions, with no options (pre-0005)
        kept = dataset_store.get(s, tenant.id, first.id)
    assert kept is not None and kept.options_key == ""
    db.dispose()


def test_asha_revision_keeps_older_searches_one_run_each_and_downgrades(database_url: str) -> None:
    """0007_asha: a search study made before it keeps one full run per trial (asha off); the
    downgrade strips the key the older SearchConfig refuses and drops the state column."""
    import sqlalchemy as sa

    db = Database(database_url)
    db.migrate()
    db.downgrade("0006")
    with db.engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (id, name, created_at) VALUES (1, 't', CURRENT_TIMESTAMP)"))
        for sid, search in ((1, '{"sampler": "tpe", "trials": 4, "parallel": 2, "seed": null}'), (2, None)):
            conn.execute(
                sa.text(
                    "INSERT INTO studies (id, tenant_id, name, dataset, screening, policy, created_at,"
                    " version, search)"
                    " VALUES (:id, 1, :name, 'digits', '{}', '{}', CURRENT_TIMESTAMP, 0, :search)"
                ),
                {"id": sid, "name": f"s{sid}", "search": search},
            )
    db.migrate()
    with db.engine.connect() as conn:
        rows = dict(conn.execute(sa.text("SELECT id, search FROM studies ORDER BY id")).all())
    from archscreen.config import SearchConfig

    old = rows[1] if isinstance(rows[1], dict) else json.loads(rows[1])
    assert SearchConfig.model_validate(old).asha.enabled is False and rows[2] is None
    assert "asha" in {c["name"] for c in inspect(db.engine).get_columns("studies")}
    db.downgrade("0006")
    with db.engine.connect() as conn:
        back = conn.execute(sa.text("SELECT search FROM studies WHERE id = 1")).scalar_one()
    assert "asha" not in (back if isinstance(back, dict) else json.loads(back))
    assert "asha" not in {c["name"] for c in inspect(db.engine).get_columns("studies")}
    db.migrate()


def test_job_cpu_seconds_revision_downgrades_alone(database_url: str) -> None:
    db = Database(database_url)
    db.migrate()
    assert "cpu_seconds" in {c["name"] for c in inspect(db.engine).get_columns("jobs")}
    db.downgrade("0007_asha")
    assert "cpu_seconds" not in {c["name"] for c in inspect(db.engine).get_columns("jobs")}
    assert "search_stopped_at" not in {c["name"] for c in inspect(db.engine).get_columns("studies")}
    assert "asha" in {c["name"] for c in inspect(db.engine).get_columns("studies")}  # 0007 stays
    db.migrate()
    assert "cpu_seconds" in {c["name"] for c in inspect(db.engine).get_columns("jobs")}
    db.dispose()

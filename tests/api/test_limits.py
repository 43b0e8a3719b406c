"""Per-tenant limits: answered with 413 / 429 naming the limit, before anything is stored."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from archscreen.api.app import create_app
from archscreen.settings import Settings
from archscreen.store import Database
from tests.api.test_api import token_for

SPEC = {"layers": ["flatten", {"linear": 4}, "relu"], "head": "classifier"}


def spec(width: int) -> dict:
    return {"spec": {**SPEC, "layers": ["flatten", {"linear": width}, "relu"]}}


@pytest.fixture
def limited(migrated: Database, tmp_path: Path) -> TestClient:
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=migrated.url,
        max_candidates_per_study=3,
        max_active_jobs_per_tenant=5,
        max_artifact_bytes_per_tenant=10_000,
    )
    settings.ensure_dirs()
    with TestClient(create_app(settings)) as c:
        c.headers.update(token_for(migrated, "acme"))
        yield c  # type: ignore[misc]


def study(client: TestClient, name: str) -> int:
    r = client.post("/api/v1/studies", json={"name": name, "dataset": "mnist1d"})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def test_candidates_per_study_is_a_413_with_the_limit_and_stores_nothing(limited: TestClient) -> None:
    sid = study(limited, "a")
    assert limited.post(f"/api/v1/studies/{sid}/candidates", json=[spec(4), spec(5)]).status_code == 201
    r = limited.post(f"/api/v1/studies/{sid}/candidates", json=[spec(6), spec(7)])
    assert r.status_code == 413 and r.json()["limit"] == 3 and r.json()["current"] == 2, r.text
    assert limited.get(f"/api/v1/studies/{sid}/candidates").json()["count"] == 2
    # re-submitting what the study holds adds nothing, so it is not refused
    assert limited.post(f"/api/v1/studies/{sid}/candidates", json=[spec(4), spec(5)]).status_code == 200


def test_active_jobs_per_tenant_is_a_429_with_retry_after(limited: TestClient) -> None:
    a, b = study(limited, "a"), study(limited, "b")
    three = [spec(4), spec(5), spec(6)]
    assert limited.post(f"/api/v1/studies/{a}/candidates", json=three).status_code == 201
    assert limited.post(f"/api/v1/studies/{b}/candidates", json=[spec(4), spec(5)]).status_code == 201
    r = limited.post(f"/api/v1/studies/{b}/candidates", json=[spec(7)])
    assert r.status_code == 429 and r.json()["limit"] == 5 and r.json()["current"] == 5, r.text
    assert r.headers["Retry-After"].isdigit()
    assert limited.get(f"/api/v1/studies/{b}/candidates").json()["count"] == 2


def test_artifact_bytes_per_tenant_is_a_413(limited: TestClient, tmp_path: Path) -> None:
    sid = study(limited, "a")
    r = limited.post(f"/api/v1/studies/{sid}/candidates", json=[spec(4)])
    job_id = limited.get(f"/api/v1/candidates/{r.json()['data'][0]['id']}").json()["runs"][0]["id"]
    folder = tmp_path / "data" / "artifacts" / "jobs" / str(job_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "checkpoint.pt").write_bytes(b"\0" * 20_000)
    from archscreen.store import quotas

    quotas._artifact_cache.clear()
    r = limited.post(f"/api/v1/studies/{sid}/candidates", json=[spec(5)])
    assert r.status_code == 413 and r.json()["limit"] == 10_000 and r.json()["current"] >= 20_000, r.text


def test_tuned_model_files_count_towards_the_artifact_limit(limited: TestClient, migrated: Database) -> None:
    # A tuning job's model file lives in the content-addressed model store, not in its job folder:
    # the limit reads its size from the job's row, each distinct file once.
    from sqlalchemy import update

    from archscreen.store import quotas
    from archscreen.store.models import Job

    sid = study(limited, "a")
    ids = [
        c["id"]
        for c in limited.post(f"/api/v1/studies/{sid}/candidates", json=[spec(4), spec(5)]).json()["data"]
    ]
    jobs = [limited.get(f"/api/v1/candidates/{i}").json()["runs"][0]["id"] for i in ids]
    with migrated.session() as s:
        for job_id in jobs:  # the same file twice: counted once
            s.execute(update(Job).where(Job.id == job_id).values(model_sha256="ab" * 32, model_bytes=6_000))
        s.commit()
    quotas._artifact_cache.clear()
    assert (
        limited.post(f"/api/v1/studies/{sid}/candidates", json=[spec(6)]).status_code == 201
    )  # 6,000 < 10,000
    with migrated.session() as s:
        s.execute(update(Job).where(Job.id == jobs[1]).values(model_sha256="cd" * 32, model_bytes=6_000))
        s.commit()
    quotas._artifact_cache.clear()
    r = limited.post(f"/api/v1/studies/{study(limited, 'b')}/candidates", json=[spec(7)])
    assert r.status_code == 413 and r.json()["limit"] == 10_000 and r.json()["current"] >= 12_000, r.text

"""``GET /tuning-jobs/{id}/model``: a succeeded tuning job hands over its model (issue 16, item 3).

End to end on real processes (``archscreen api`` + ``archscreen worker``) on SQLite + the
filesystem broker and on PostgreSQL + Redis: the file loads with ``weights_only=True``, rebuilds
the network from its spec, and reproduces the job's reported metrics. The 404/409 answers that
need no training run against the app in-process.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from archscreen.api.app import create_app
from archscreen.client import FINAL, Client
from archscreen.core.data import DatasetInfo, load_dataset
from archscreen.core.spec import parse_spec, spec_hash
from archscreen.core.training.loop import evaluate
from archscreen.core.training.model import build_plain_model
from archscreen.settings import Settings
from archscreen.store import Database, Job
from archscreen.store import jobs as job_store
from archscreen.store.auth import create_token
from archscreen.store.blobs import sha256_of
from tests.services import BACKENDS, RunningService, service_backend

MLP = {"name": "mlp", "layers": ["flatten", {"linear": 16}, "relu"], "head": "classifier"}
SCREENING = {"max_epochs": 2, "patience": 2, "batch_size": 64, "seeds": [0], "max_steps_per_epoch": 30}


@pytest.fixture(params=BACKENDS)
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningService]:
    yield from service_backend(request, tmp_path)


def wait_for(predicate: Any, timeout: float, what: str, svc: RunningService) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}\n{svc.logs()}")


@pytest.mark.slow
def test_a_succeeded_tuning_job_hands_over_a_model_that_reproduces_its_metrics(
    service: RunningService, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    service.start_api()
    service.start_worker(concurrency=1)
    service.wait_ready()
    with Client(service.url, service.token) as c:
        study = c.create_study(
            "model-e2e",
            dataset="mnist1d",
            screening=SCREENING,
            policy={"top_k": 1, "auto": True, "starts": 1},
        )
        cand = c.add_candidates(study.id, [{"spec": MLP}])[0]
        jobs = wait_for(
            lambda: (js := c.tuning_jobs(study.id)) and js[0].state in FINAL and js,
            120,
            "the auto-promoted tuning job",
            service,
        )
        done = c.tuning_job(jobs[0].id)
        assert done.state == "succeeded", done.error
        job = done
        screen_job_id = c.candidate(cand.id).runs[0].id
        result = done.result
        assert done.model is not None and done.model.bytes > 0

        got = c.download_model(job.id, tmp_path / "best.pt")
        assert got.sha256 == done.model.sha256 == sha256_of(tmp_path / "best.pt")
        assert got.bytes == done.model.bytes == (tmp_path / "best.pt").stat().st_size

        # the raw response: a file, named, with its digest
        r = httpx.get(
            f"{service.url}/api/v1/tuning-jobs/{job.id}/model",
            headers={"Authorization": f"Bearer {service.token}"},
        )
        assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
        assert r.headers["content-disposition"] == f'attachment; filename="model-e2e-tuning-job-{job.id}.pt"'
        assert (
            r.headers["x-content-sha256"] == got.sha256 and r.content == (tmp_path / "best.pt").read_bytes()
        )

        # 404s are JSON and name the job: unknown, a screening run, another tenant's, no token
        for missing in (999_999, screen_job_id):
            r = httpx.get(
                f"{service.url}/api/v1/tuning-jobs/{missing}/model",
                headers={"Authorization": f"Bearer {service.token}"},
            )
            assert r.status_code == 404 and r.json() == {"detail": f"tuning job {missing} not found"}
        db = Database(service.env["ARCHSCREEN_DATABASE_URL"])
        with db.session() as s:
            other = create_token(s, "someone-else")
        db.dispose()
        r = httpx.get(
            f"{service.url}/api/v1/tuning-jobs/{job.id}/model",
            headers={"Authorization": f"Bearer {other}"},
        )
        assert r.status_code == 404 and "not found" in r.json()["detail"]
        assert httpx.get(f"{service.url}/api/v1/tuning-jobs/{job.id}/model").status_code == 401

    # the file: plain data only, and the network it describes reproduces the job's figures
    f = torch.load(tmp_path / "best.pt", weights_only=True)
    assert f["format"] == 1 and f["job_id"] == job.id and f["tuner"] == result["tuner"] != ""
    assert f["lr"] == pytest.approx(result["recommended_lr"], rel=1e-12)
    assert spec_hash(parse_spec(f["spec"])) == cand.spec_hash
    assert f["metrics"]["best_epoch"] == result["best_epoch"] and f["dataset"]["name"] == "mnist1d"
    model = build_plain_model(f["spec"], DatasetInfo(**f["dataset"]))
    model.load_state_dict(f["state_dict"], strict=True)
    splits = load_dataset(f["dataset"]["name"], seed=f["seed"])
    val = evaluate(model, splits.x_val, splits.y_val, 1024)
    test = evaluate(model, splits.x_test, splits.y_test, 1024)
    assert val.loss == pytest.approx(result["val_loss"], rel=1e-5)
    assert val.accuracy == pytest.approx(result["val_accuracy"], abs=1e-9)
    assert test.loss == pytest.approx(result["test_loss"], rel=1e-5)
    assert f["metrics"]["val_loss"] == pytest.approx(result["val_loss"], rel=1e-12)
    # a freshly initialised network of the same spec does not (the weights are the point)
    fresh = build_plain_model(f["spec"], DatasetInfo(**f["dataset"]))
    assert evaluate(fresh, splits.x_val, splits.y_val, 1024).loss != pytest.approx(
        result["val_loss"], rel=1e-3
    )
    print(
        f"\n{service.env['ARCHSCREEN_DATABASE_URL'].split(':')[0]}: model test {time.monotonic() - t0:.1f} s"
    )


# ---------------------------------------------------------------------- 409s without training


@pytest.fixture
def app_env(database_url: str, tmp_path: Path, migrated: Database):  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    settings.ensure_dirs()
    with migrated.session() as s:
        auth = {"Authorization": f"Bearer {create_token(s, 'acme')}"}
    with TestClient(create_app(settings)) as client:
        yield client, auth, migrated


def succeeded_tuning_job(client: TestClient, auth: dict[str, str], db: Database) -> int:
    """A tuning job driven through the store's life cycle as a worker would, without training."""
    study = client.post(
        "/api/v1/studies", headers=auth, json={"name": "s", "dataset": "mnist1d", "screening": {"seeds": [0]}}
    ).json()
    cid = client.post(f"/api/v1/studies/{study['id']}/candidates", headers=auth, json={"spec": MLP}).json()[
        "data"
    ][0]["id"]
    with db.session() as s:
        screen = s.query(Job).filter_by(candidate_id=cid, kind="screen").one()
        job_store.claim(s, screen.id, "w", 30)
    with db.session() as s:
        posterior = [{"lr": 0.01, "weight": 1.0}]
        job_store.finish(
            s, screen.id, "w", "succeeded", result={"val_loss": 1.0, "switch_posterior": posterior}
        )
    r = client.post(f"/api/v1/studies/{study['id']}/promote", headers=auth, json={"top_k": 1})
    tune_id = int(r.json()["data"][0]["id"])
    with db.session() as s:
        job_store.claim(s, tune_id, "w", 30)
    return tune_id


def test_a_job_without_a_model_file_is_a_409_that_says_why(app_env: Any) -> None:
    client, auth, db = app_env
    tune_id = succeeded_tuning_job(client, auth, db)
    r = client.get(f"/api/v1/tuning-jobs/{tune_id}/model", headers=auth)
    assert r.status_code == 409 and r.json()["detail"] == (
        f"tuning job {tune_id} is running: a model is handed over once the job has succeeded"
    )
    with db.session() as s:  # a job that finished before the service kept models
        assert job_store.finish(s, tune_id, "w", "succeeded", result={"val_loss": 1.0})
    r = client.get(f"/api/v1/tuning-jobs/{tune_id}/model", headers=auth)
    assert r.status_code == 409 and "succeeded without a model file" in r.json()["detail"]
    assert client.get(f"/api/v1/tuning-jobs/{tune_id}", headers=auth).json()["model"] is None


def test_a_model_file_lost_from_the_blob_store_is_a_409(app_env: Any) -> None:
    client, auth, db = app_env
    tune_id = succeeded_tuning_job(client, auth, db)
    lost = job_store.ModelArtifact(key="models/ab/" + "ab" * 32, size=10, sha256="ab" * 32)
    with db.session() as s:
        assert job_store.finish(s, tune_id, "w", "succeeded", result={"val_loss": 1.0}, model=lost)
    assert client.get(f"/api/v1/tuning-jobs/{tune_id}", headers=auth).json()["model"] == {
        "bytes": 10,
        "sha256": "ab" * 32,
    }
    r = client.get(f"/api/v1/tuning-jobs/{tune_id}/model", headers=auth)
    assert (
        r.status_code == 409
        and r.json()["detail"] == f"tuning job {tune_id}'s model file is missing from the blob store"
    )

"""worker.runner.execute in-process: a lost lease stops the job without writing anything."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import torch

from archscreen.settings import Settings
from archscreen.store import Database, Job
from archscreen.store import jobs as job_store
from archscreen.store import studies as study_store
from archscreen.store.auth import get_or_create_tenant
from archscreen.worker.runner import execute

MLP = {"name": "mlp", "layers": ["flatten", {"linear": 32}, "relu"], "head": "classifier"}


def setup(tmp_path: Path) -> tuple[Database, Settings, int]:
    settings = Settings(data_dir=tmp_path, heartbeat_s=0.2, lease_s=30)
    settings.ensure_dirs()
    db = Database(settings.resolved_database_url)
    db.migrate()
    with db.session() as s:
        tenant = get_or_create_tenant(s, "t")
        study = study_store.create_study(
            s,
            tenant.id,
            name="s",
            dataset="mnist1d",
            policy={"top_k": 1},
            screening={
                "max_epochs": 500,
                "patience": 500,
                "batch_size": 32,
                "seeds": [0],
                "base": "sgd",
                "max_steps_per_epoch": 20,
            },
        )
        _, _, jobs = study_store.add_candidate(
            s, study, name="mlp", spec=MLP, spec_hash="h", num_params=1, summary=[], max_attempts=3
        )
    return db, settings, jobs[0].id


def run_in_thread(db: Database, settings: Settings, job_id: int) -> tuple[threading.Thread, list[str]]:
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(execute(db, settings, job_id, owner="w1")))
    t.start()
    return t, out


def wait_epoch(db: Database, job_id: int, epoch: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with db.session() as s:
            job = s.get(Job, job_id)
            if job is not None and job.epoch >= epoch:
                return
        time.sleep(0.05)
    raise AssertionError("the job did not train")


def test_a_lost_lease_stops_the_job_and_writes_nothing(tmp_path: Path) -> None:
    db, settings, job_id = setup(tmp_path)
    t, out = run_in_thread(db, settings, job_id)
    wait_epoch(db, job_id, 2)
    with db.session() as s:  # what the reaper + another worker's claim would leave
        s.query(Job).filter(Job.id == job_id).update({"lease_owner": "w2"})
    t.join(60)
    assert out == ["lost"]
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.state == "running" and job.lease_owner == "w2" and job.result is None
    ckpt = torch.load(tmp_path / "artifacts" / "jobs" / str(job_id) / "checkpoint.pt", weights_only=False)
    assert ckpt["stopped_because"] is None  # the new owner resumes training, not a "cancelled" run
    db.dispose()


def test_a_cancel_stops_the_job_as_cancelled_with_its_result(tmp_path: Path) -> None:
    db, settings, job_id = setup(tmp_path)
    t, out = run_in_thread(db, settings, job_id)
    wait_epoch(db, job_id, 2)
    with db.session() as s:
        job_store.request_cancel(s, job_id)
    t.join(60)
    assert out == ["cancelled"]
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.state == "cancelled" and job.result is not None
        assert job.result["stopped_because"] == "cancelled" and job.result["device"] == "cpu"
    db.dispose()

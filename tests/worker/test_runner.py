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


def test_a_tuning_jobs_training_seed_is_its_configs_train_seed(tmp_path: Path) -> None:
    """A promotion's starts are jobs with seeds 0, 1, 2 (their unique key) that all train with
    ``train_seed`` 0: from one starting rate they train the same run. A job from before starts has
    no ``train_seed``: it trains with its own seed."""
    settings = Settings(data_dir=tmp_path, heartbeat_s=0.2, lease_s=30)
    settings.ensure_dirs()
    db = Database(settings.resolved_database_url)
    db.migrate()
    screening = {"max_epochs": 1, "batch_size": 32, "base": "sgd", "max_steps_per_epoch": 3}
    with db.session() as s:
        tenant = get_or_create_tenant(s, "t")
        study = study_store.create_study(
            s, tenant.id, name="s", dataset="digits", policy={}, screening=screening
        )
        cand, _, _ = study_store.add_candidate(
            s, study, name="mlp", spec=MLP, spec_hash="h", num_params=1, summary=[], max_attempts=3
        )
        start = {"tuner": "fd2", "init_lr": 0.05, "start": "p50", "start_quantile": 0.5, "train_seed": 0}
        configs = {1: start, 2: {**start, "start": "p25"}, 3: {"tuner": "fd2", "init_lr": 0.05}}
        jobs = {
            seed: Job(kind="tune", study_id=study.id, candidate_id=cand.id, seed=seed, max_epochs=1, config=c)
            for seed, c in configs.items()
        }
        s.add_all(jobs.values())
        s.flush()
        ids = {seed: j.id for seed, j in jobs.items()}
    results = {}
    for seed, job_id in ids.items():
        assert execute(db, settings, job_id, owner="w1") == "succeeded"
        with db.session() as s:
            results[seed] = s.get(Job, job_id).result  # type: ignore[union-attr]
    assert [results[seed]["seed"] for seed in (1, 2, 3)] == [0, 0, 3]
    # same training seed and rate: the same run (the job seed does not reach the training)
    assert results[1]["val_loss"] == results[2]["val_loss"] != results[3]["val_loss"]
    db.dispose()


def test_job_records_its_cpu_seconds_over_attempts(tmp_path: Path) -> None:
    """jobs.cpu_seconds is this process's CPU time for the job plus what earlier attempts recorded
    (a job resumed after a crash keeps its first attempt's seconds)."""
    db, settings, job_id = setup(tmp_path)
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.cpu_seconds == 0.0
        job.max_epochs = 2
        job.cpu_seconds = 100.0  # what a first attempt recorded before it was killed
        study_id = job.study_id
    from archscreen.store.models import Study

    with db.session() as s:
        study = s.get(Study, study_id)
        assert study is not None
        study.screening = {**study.screening, "max_epochs": 2}
    before = time.process_time()
    assert execute(db, settings, job_id, owner="w1") == "succeeded"
    spent = time.process_time() - before
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job is not None
        assert 100.0 < job.cpu_seconds <= 100.0 + spent
        assert job.cpu_seconds - 100.0 > 0.5 * spent  # most of the call's CPU time was the job's
    db.dispose()

"""`archscreen worker --gpus 0` on a real GPU: one worker pinned with CUDA_VISIBLE_DEVICES trains a
screening job on CUDA, and CUDA is never initialised in the processes that fork (supervisor, Celery
main process)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from archscreen.settings import Settings
from archscreen.store import Database, Job
from archscreen.store import studies as study_store
from archscreen.store.auth import get_or_create_tenant
from archscreen.worker.queue import enqueue

SPEC = {
    "name": "cnn",
    "layers": [{"conv1d": {"out": 32, "kernel": 5, "padding": 2}}, "relu", "flatten", {"linear": 64}, "relu"],
    "head": "classifier",
}


def cuda_loaded(pid: int) -> bool:
    try:
        return "libcuda" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def test_gpu_worker_trains_on_cuda_and_never_initialises_cuda_before_fork(tmp_path: Path) -> None:
    env = {**os.environ, "ARCHSCREEN_DATA_DIR": str(tmp_path), "ARCHSCREEN_HEARTBEAT_S": "0.5"}
    settings = Settings(data_dir=tmp_path)
    settings.ensure_dirs()
    db = Database(settings.resolved_database_url)
    db.migrate()
    with db.session() as s:
        tenant = get_or_create_tenant(s, "gpu")
        study = study_store.create_study(
            s,
            tenant.id,
            name="gpu",
            dataset="mnist1d",
            policy={"top_k": 1},
            screening={"max_epochs": 3, "patience": 3, "batch_size": 64, "seeds": [0], "base": "sgd"},
        )
        _, _, jobs = study_store.add_candidate(
            s, study, name="cnn", spec=SPEC, spec_hash="h", num_params=1, summary=[], max_attempts=1
        )
        job_id = jobs[0].id
    log_file = open(tmp_path / "worker.log", "w")  # noqa: SIM115 - closed in finally
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "archscreen", "worker", "--gpus", "0"],
        env=env,
        cwd=tmp_path,  # the repo root would shadow the installed package
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    try:
        enqueue(db, settings, [(job_id, "screen")])
        deadline = time.monotonic() + 300
        forking: set[int] = set()
        state = "queued"
        while time.monotonic() < deadline:
            proc = psutil.Process(supervisor.pid)
            for child in proc.children(recursive=False):  # the per-GPU Celery main processes
                forking.add(child.pid)
                assert child.environ().get("CUDA_VISIBLE_DEVICES") == "0"
            assert not cuda_loaded(supervisor.pid)
            assert not any(cuda_loaded(p) for p in forking if psutil.pid_exists(p))
            with db.session() as s:
                job = s.get(Job, job_id)
                assert job is not None
                state = job.state
                result = job.result
            if state not in ("queued", "running"):
                break
            time.sleep(0.5)
        log = (tmp_path / "worker.log").read_text()
        assert state == "succeeded", log[-3000:]
        assert result is not None and str(result["device"]).startswith("cuda"), result
        assert forking, "no per-GPU worker process was started"
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(60)
        log_file.close()
        db.dispose()

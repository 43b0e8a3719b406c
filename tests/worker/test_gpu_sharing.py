"""``archscreen worker --gpus IDS --jobs-per-gpu K`` on a machine without a GPU.

* The arguments, through the real CLI: K outside 1..64, --jobs-per-gpu with --cpu or without a
  visible GPU, bad --gpus lists are one readable line and a non-zero exit.
* The process layout, rehearsed on the CPU (ARCHSCREEN_DEVICE=cpu with --gpus): the supervisor
  starts one worker pinned to GPU 0 with K job processes, and K jobs train at the same time, each
  recording the memory fraction it would set (1/K of the safety margin) in its stored result.
* A job that runs out of GPU memory (torch.cuda.OutOfMemoryError, raised where the forward pass
  allocates, since there is no GPU here) fails with the stored one-line reason, not a traceback.

The cap itself (set_per_process_memory_fraction on a real device) is gpu_tests/test_gpu_sharing.py.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch

from archscreen.core.training.model import ScreenModel
from archscreen.settings import Settings
from archscreen.store import Job
from archscreen.worker import gpu_share
from archscreen.worker.runner import execute
from tests.worker.procs import SLOW, Deployment, deployment, wait_for

MLP = {"name": "mlp", "layers": ["flatten", {"linear": 32}, "relu"], "head": "classifier"}


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "archscreen", "worker", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--jobs-per-gpu", "0"], "argument --jobs-per-gpu: expected an integer from 1 to 64, got 0"),
        (["--jobs-per-gpu", "65"], "argument --jobs-per-gpu: expected an integer from 1 to 64, got 65"),
        (["--jobs-per-gpu", "two"], "argument --jobs-per-gpu: expected an integer from 1 to 64, got 'two'"),
        (["--cpu", "--jobs-per-gpu", "2"], "with --cpu use --concurrency K"),
        (["--jobs-per-gpu", "2", "--concurrency", "2"], "give one of them"),
        (["--gpus", "0,0", "--jobs-per-gpu", "2"], "GPU 0 listed twice; to run several jobs on one GPU use"),
        (["--gpus", "0,x"], "'x' is not a GPU id"),
        (["--gpus", "0,"], "expected comma-separated GPU ids"),
    ],
)
def test_bad_arguments_are_one_readable_line(tmp_path: Path, args: list[str], message: str) -> None:
    out = cli(*args, "--data-dir", str(tmp_path))
    assert out.returncode == 2, out
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("archscreen worker: error: "), out.stderr
    assert message in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_help_explains_jobs_per_gpu() -> None:
    out = cli("--help")
    assert out.returncode == 0
    text = " ".join(out.stdout.split())
    assert "--jobs-per-gpu K" in text and "0.95/K" in text
    assert "with --cpu or without a visible GPU it is an error (use --concurrency K there)" in text


def test_without_a_gpu_jobs_per_gpu_and_gpus_are_errors(tmp_path: Path) -> None:
    data = ["--data-dir", str(tmp_path)]
    no_gpu = {"CUDA_VISIBLE_DEVICES": ""}  # the machine without a GPU, on any machine
    subprocess.run([sys.executable, "-m", "archscreen", "migrate", *data], check=True, capture_output=True)
    out = cli("--jobs-per-gpu", "2", *data, env=no_gpu)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out
    assert "no CUDA device is visible (torch.cuda.device_count() is 0); on the CPU use --concurrency K" in (
        out.stderr
    )
    out = cli("--gpus", "0", "--jobs-per-gpu", "2", *data, env=no_gpu)
    assert out.returncode == 1 and out.stderr.count("\n") == 1, out
    assert "--gpus 0: no CUDA device is visible on this machine" in out.stderr


def _pool_processes(supervisor: int) -> tuple[psutil.Process, list[psutil.Process]]:
    """The supervisor's one pinned Celery worker and that worker's job (pool) processes."""
    workers = psutil.Process(supervisor).children()
    assert len(workers) == 1, workers
    return workers[0], workers[0].children()


def test_k_job_processes_share_one_pinned_gpu_and_record_their_fraction(tmp_path: Path) -> None:
    k = 2
    with deployment(tmp_path, device="cpu") as d:
        log = open(tmp_path / "gpus.log", "ab")  # noqa: SIM115 - closed below
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "archscreen", "worker", "--gpus", "0", "--jobs-per-gpu", str(k)],
            env=d.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        d.procs["gpus"] = supervisor
        try:
            d.wait_worker_ready(timeout=120)

            def k_job_processes() -> tuple[psutil.Process, list[psutil.Process]] | None:
                worker, pool = _pool_processes(supervisor.pid)
                return (worker, pool) if len(pool) == k else None

            worker, pool = wait_for(k_job_processes, 60, f"{k} job processes", d.logs)
            cmd = worker.cmdline()
            assert cmd[cmd.index("--pinned-gpu") + 1] == "0" and cmd[cmd.index("--jobs-per-gpu") + 1] == "2"
            for proc in [worker, *pool]:  # every process of the worker sees GPU 0 only
                assert proc.environ().get("CUDA_VISIBLE_DEVICES") == "0"
            study = d.study(max_epochs=3, max_steps_per_epoch=15)
            ids = d.add_jobs(study, [SLOW, SLOW])
            wait_for(
                lambda: all(d.job(i).state == "running" for i in ids),
                120,
                "both jobs running at once",
                d.logs,
            )

            def all_succeeded() -> list[Job] | None:
                jobs = [d.job(i) for i in ids]
                return jobs if all(j.state == "succeeded" for j in jobs) else None

            jobs = wait_for(all_succeeded, 240, "both jobs to succeed", d.logs)
        finally:
            log.close()
        for job in jobs:
            assert job.result is not None
            assert job.result["gpu_share"] == {
                "gpu": "0",
                "jobs_per_gpu": k,
                "memory_fraction": pytest.approx(0.95 / k),
                "applied": False,
                "share_gib": None,
            }
            assert job.result["device"] == "cpu"
        # the job processes said what they would cap, once each, in distinct processes
        lines = [ln for ln in (tmp_path / "gpus.log").read_text().splitlines() if "shared by 2 job" in ln]
        assert len(lines) == 2 and all("memory fraction 0.475 (not applied" in ln for ln in lines), lines
        assert len({ln.split("job process ")[1].split(":")[0] for ln in lines}) == 2


# --------------------------------------------------------------------------- out of GPU memory


@contextlib.contextmanager
def one_job(tmp_path: Path, **settings: Any) -> Iterator[tuple[Deployment, Settings, int]]:
    """A study with one small MLP screening job (not sent: the test runs it in-process)."""
    with deployment(tmp_path) as d:
        study = d.study(dataset="mnist1d", max_epochs=2, patience=5, max_steps_per_epoch=5)
        [job_id] = d.add_jobs(study, [MLP], send=False)
        s = Settings(data_dir=tmp_path / "data", heartbeat_s=0.2, lease_s=30, device="cpu", **settings)
        yield d, s, job_id


def _oom_on_third_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the caching allocator raises it: an allocation in the forward pass (step 3)."""
    calls = {"n": 0}
    forward = ScreenModel.forward

    def allocating_forward(self: ScreenModel, x: torch.Tensor, y: torch.Tensor) -> Any:
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.cuda.OutOfMemoryError(
                "CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total capacity of 139.81 GiB"
            )
        return forward(self, x, y)

    monkeypatch.setattr(ScreenModel, "forward", allocating_forward)


def test_a_job_over_its_share_fails_with_the_stored_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(gpu_share.PINNED_GPU_ENV, "3")
    _oom_on_third_forward(monkeypatch)
    with one_job(tmp_path, jobs_per_gpu=4) as (d, settings, job_id):
        assert execute(d.db, settings, job_id, owner="w1") == "failed"
        job = d.job(job_id)
        assert job.state == "failed" and job.lease_owner is None and job.result is None
        # no CUDA here, so the share is given as a fraction; on a GPU it is in GiB (gpu_tests/)
        assert job.error == (
            "job needs more than the 1/4 share of GPU 3: 0.2375 of its memory; lower --jobs-per-gpu"
        )
        assert not (d.job_dir(job_id) / "error.txt").exists()


def test_out_of_memory_without_sharing_names_the_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(gpu_share.PINNED_GPU_ENV, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    _oom_on_third_forward(monkeypatch)
    with one_job(tmp_path) as (d, settings, job_id):
        assert execute(d.db, settings, job_id, owner="w1") == "failed"
        assert d.job(job_id).error == (
            "job needs more memory than GPU 1 has: lower the batch size or the model's size"
        )


def test_a_shared_job_records_its_share_and_cuda_graphs_is_a_noop_on_the_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(gpu_share.PINNED_GPU_ENV, "0")
    with one_job(tmp_path, jobs_per_gpu=8, cuda_graphs=True) as (d, settings, job_id):
        with caplog.at_level("INFO"):
            assert execute(d.db, settings, job_id, owner="w1") == "succeeded"
        result = d.job(job_id).result
    assert result is not None
    assert result["gpu_share"]["memory_fraction"] == pytest.approx(0.95 / 8)
    assert result["cuda_graphs"] == "CUDA graphs off: CUDA graphs need a CUDA device; this job trains on cpu"
    assert "CUDA graphs off: CUDA graphs need a CUDA device" in caplog.text
    assert "GPU 0 shared by 8 job processes: memory fraction 0.1187 (not applied" in caplog.text


def test_pin_names_the_gpu_without_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(gpu_share.PINNED_GPU_ENV, raising=False)
    try:
        gpu_share.pin("2")  # what `archscreen worker --gpus` does in each GPU's worker
        assert gpu_share.pinned_gpu() == "2"
    finally:
        gpu_share.pin(None)
    assert gpu_share.pinned_gpu() is None

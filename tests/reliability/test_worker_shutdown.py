"""Stopping a worker: a SIGTERM (systemd, docker, Ctrl-C on `archscreen up`) stops each job at its
next epoch boundary, checkpoints it and requeues it; a hard-killed parent takes its workers and
their jobs with it (issue 18, item 11)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import torch

from tests.services import free_port
from tests.worker.procs import (
    BACKENDS,
    SLOW,
    Deployment,
    backend_deployment,
    children_of,
    deployment,
    group_alive,
    wait_for,
)

pytestmark = pytest.mark.slow


def running_at_epoch(d: Deployment, job_id: int, epoch: int, timeout: float = 90) -> None:
    wait_for(
        lambda: (j := d.job(job_id)).state == "running" and j.epoch >= epoch,
        timeout,
        f"job {job_id} to reach epoch {epoch}",
        d.logs,
    )


def assert_requeued_with_checkpoint(d: Deployment, job_id: int) -> int:
    job = d.job(job_id)
    assert job.state == "queued" and job.lease_owner is None and job.lease_expires_at is None, d.logs()
    assert job.attempts == 0  # a requeue on shutdown does not use up an attempt
    ckpt = torch.load(d.job_dir(job_id) / "checkpoint.pt", weights_only=False)
    assert ckpt["epoch"] == job.epoch and ckpt["stopped_because"] is None  # resumes at the next epoch
    assert [e for e, _ in d.curves(job_id)] == list(range(1, job.epoch + 1))
    assert not list(d.job_dir(job_id).glob("*.tmp"))
    return job.epoch


@pytest.mark.parametrize("backend", BACKENDS)
def test_sigterm_to_a_worker_requeues_its_job_at_an_epoch_boundary_and_another_worker_resumes_it(
    tmp_path: Path, backend: str
) -> None:
    with backend_deployment(backend, tmp_path) as d:
        w1 = d.start_worker("w1")
        job_id = d.add_jobs(d.study(max_epochs=6), [SLOW])[0]
        running_at_epoch(d, job_id, 2)
        t0 = time.monotonic()
        os.kill(w1.pid, signal.SIGTERM)  # the main process only, as systemd or docker stop it
        w1.wait(30)
        stopped_s = time.monotonic() - t0
        assert not group_alive(w1.pid), "the job process outlived its worker"
        epoch = assert_requeued_with_checkpoint(d, job_id)
        assert epoch < 6, "the job ran to its end instead of stopping"
        before = d.curves(job_id)
        print(f"worker stopped {stopped_s:.1f} s after SIGTERM, job requeued at epoch {epoch}")

        d.start_worker("w2")
        wait_for(lambda: d.job(job_id).state == "succeeded", 120, "the resumed job", d.logs)
        job = d.job(job_id)
        assert job.attempts == 1
        after = d.curves(job_id)
        assert [e for e, _ in after] == list(range(1, 7))
        assert after[: len(before)] == before  # the epochs before the stop were not retrained


def test_ctrl_c_on_up_requeues_the_running_job_with_its_checkpoint(tmp_path: Path) -> None:
    with deployment(tmp_path) as d:
        up = d.start_up(free_port())
        d.wait_worker_ready(timeout=90)
        job_id = d.add_jobs(d.study(max_epochs=500, patience=500), [SLOW])[0]
        running_at_epoch(d, job_id, 2)
        worker = next(iter(children_of(up.pid)))
        up.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        assert up.wait(60) == 0
        print(f"`up` stopped {time.monotonic() - t0:.1f} s after Ctrl-C")
        assert not group_alive(worker)
        assert_requeued_with_checkpoint(d, job_id)


def test_a_hard_killed_up_takes_its_worker_and_job_down_within_seconds(tmp_path: Path) -> None:
    with deployment(tmp_path) as d:
        up = d.start_up(free_port())
        d.wait_worker_ready(timeout=90)
        job_id = d.add_jobs(d.study(max_epochs=500, patience=500), [SLOW])[0]
        running_at_epoch(d, job_id, 1)
        worker = next(iter(children_of(up.pid)))
        assert children_of(worker), "the job process"
        up.kill()
        up.wait(10)
        t0 = time.monotonic()
        wait_for(lambda: not group_alive(worker), 20, "the worker and its job process to exit", d.logs)
        print(f"worker and job process gone {time.monotonic() - t0:.1f} s after `up` was killed")
        assert_requeued_with_checkpoint(d, job_id)


def test_a_hard_killed_worker_takes_its_job_process_with_it(tmp_path: Path) -> None:
    with deployment(tmp_path) as d:
        w = d.start_worker("w")
        job_id = d.add_jobs(d.study(max_epochs=500, patience=500), [SLOW])[0]
        running_at_epoch(d, job_id, 1)
        child = next(iter(children_of(w.pid)))
        os.kill(w.pid, signal.SIGKILL)
        w.wait(10)
        t0 = time.monotonic()
        wait_for(lambda: not group_alive(w.pid), 5, "the job process to exit", d.logs)
        print(f"job process {child} gone {time.monotonic() - t0:.1f} s after its worker was killed")

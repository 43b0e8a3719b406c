"""Stale messages (cancelled or duplicate jobs) are dropped by the worker's main process, and the
maintenance sweep does not re-send messages a worker merely holds (issue 18, item 4)."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from archscreen.store import Job
from archscreen.store.db import utcnow
from archscreen.worker.app import send_job
from archscreen.worker.queue import broker_queue_length, celery_for
from tests.worker.procs import BACKENDS, TINY, backend_deployment, deployment, wait_for

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("backend", BACKENDS)
def test_500_cancelled_messages_do_not_hold_up_a_new_job(tmp_path: Path, backend: str) -> None:
    with backend_deployment(backend, tmp_path) as d:
        d.start_worker(concurrency=1)
        d.wait_worker_ready()
        study = d.study()
        stale = d.add_jobs(study, [TINY] * 500, send=False, cancelled=True)
        app = celery_for(d.settings)
        t_first = time.monotonic()
        for job_id in stale:  # the messages of jobs cancelled while they waited in the queue
            send_job(app, job_id, "screen", d.settings.queue)
        fresh = d.add_jobs(study, [TINY])[0]
        t0 = time.monotonic()
        wait_for(
            lambda: d.job(fresh).state in ("running", "succeeded"),
            10,
            "the new job to start behind 500 stale messages",
            d.logs,
        )
        t_started = time.monotonic()
        wait_for(lambda: d.job(fresh).state == "succeeded", 60, "the new job to succeed", d.logs)
        assert broker_queue_length(d.settings) == 0
        assert all(d.job(j).state == "cancelled" and d.job(j).attempts == 0 for j in stale[:20])
        print(
            f"new job started {t_started - t0:.1f} s after its submission, {t_started - t_first:.1f} s "
            f"after the first of the 500 stale messages ahead of it was sent ({t0 - t_first:.1f} s to send)"
        )
        log = (tmp_path / "w.log").read_text()
        # every stale message was dropped by the main process: no job process was spent on one
        assert log.count("message dropped") == 500, d.logs()
        assert "not claimable (already taken" not in log


def test_a_message_a_worker_holds_is_not_re_sent_by_the_sweep(tmp_path: Path) -> None:
    from archscreen.worker.tasks import maintenance_once

    with deployment(tmp_path) as d:
        job_id = d.add_jobs(d.study(), [TINY])[0]
        # a worker took the message (prefetched, waiting for a job process): the queue is empty,
        # the job still queued, sent long ago
        folder = d.settings.broker_folder / "queue"
        for f in folder.iterdir():
            f.unlink()
        with d.db.session() as s:
            s.query(Job).filter(Job.id == job_id).update({"enqueued_at": utcnow() - timedelta(seconds=120)})
        maintenance_once(d.db, d.settings, "w1", "cpu", held=[job_id])
        assert broker_queue_length(d.settings) == 0  # held: not lost, not re-sent
        assert d.job(job_id).enqueued_at is not None
        assert d.job(job_id).enqueued_at > utcnow() - timedelta(seconds=10)
        # the holder went away without it (no worker holds it): after the grace, sent once
        with d.db.session() as s:
            s.query(Job).filter(Job.id == job_id).update({"enqueued_at": utcnow() - timedelta(seconds=120)})
        maintenance_once(d.db, d.settings, "w1", "cpu", held=[])
        maintenance_once(d.db, d.settings, "w1", "cpu", held=[])
        assert broker_queue_length(d.settings) == 1

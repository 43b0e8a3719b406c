"""Celery tasks: named, take a job id, idempotent (the database claim decides who runs a job)."""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any

from archscreen.store import Database
from archscreen.store import jobs as job_store
from archscreen.store.ranking import studies_awaiting_auto_promotion
from archscreen.worker.app import make_celery
from archscreen.worker.promotion import after_screening_finished
from archscreen.worker.queue import broker_queue_length, enqueue
from archscreen.worker.runner import execute
from celery import signals

from archscreen.settings import Settings

log = logging.getLogger("archscreen.worker")

settings = Settings()
app = make_celery(settings)

_db: tuple[int, Database] | None = None


def database() -> Database:
    """One engine per process, created after fork (a forked engine's sockets are not shareable)."""
    global _db
    if _db is None or _db[0] != os.getpid():
        _db = (os.getpid(), Database(settings.resolved_database_url))
    return _db[1]


@app.task(name="archscreen.screen_run", acks_late=True)
def screen_run(job_id: int) -> str:
    return execute(database(), settings, int(job_id))


@app.task(name="archscreen.tune_job", acks_late=True)
def tune_job(job_id: int) -> str:
    return execute(database(), settings, int(job_id))


def maintenance_once(db: Database, s: Settings, worker_name: str, device: str) -> list[int]:
    """Record this worker as alive, requeue jobs of dead workers, send messages that never went out."""
    with db.session() as sess:
        job_store.worker_seen(sess, worker_name, os.getpid(), device)
    with db.session() as sess:
        requeued = job_store.reap(sess)
    if requeued:
        log.warning("reaper: requeued jobs %s (their worker stopped heartbeating)", requeued)
    with db.session() as sess:
        pending = job_store.unsent(sess)
    enqueue(db, s, pending)
    with db.session() as sess:
        lost = job_store.lost_messages(sess, broker_queue_length(s))
    if lost:
        log.warning("broker queue is empty but %d job(s) are queued: re-sending them", len(lost))
        enqueue(db, s, lost)
    # auto-promotions whose trigger was not a worker finishing a job (a cancel, the reaper failing
    # a job) or whose first try failed: the compare-and-set makes this safe to repeat
    with db.session() as sess:
        awaiting = studies_awaiting_auto_promotion(sess)
    for study_id in awaiting:
        after_screening_finished(db, s, study_id)
    return requeued


class Maintenance(threading.Thread):
    """Runs in the worker's main process (never in a job's child)."""

    def __init__(self, worker_name: str, device: str) -> None:
        super().__init__(name="archscreen-maintenance", daemon=True)
        self.worker_name, self.device = worker_name, device
        self.stop_event = threading.Event()

    def run(self) -> None:
        interval = min(settings.reaper_interval_s, settings.worker_seen_s / 3)
        parent = os.environ.get("ARCHSCREEN_PARENT_PID")
        while True:
            if parent and os.getppid() != int(parent):
                # started by `archscreen up`, which is gone (killed hard): do not linger as an orphan
                log.warning("parent process %s is gone; shutting down", parent)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            try:
                maintenance_once(database(), settings, self.worker_name, self.device)
            except Exception:
                log.exception("maintenance pass failed; retrying")
            if self.stop_event.wait(interval):
                return


_maintenance: Maintenance | None = None


@signals.worker_ready.connect
def _start_maintenance(sender: Any = None, **_: Any) -> None:
    global _maintenance
    name = getattr(sender, "hostname", None) or f"worker@{os.getpid()}"
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
    device = f"cuda:{gpu}" if gpu and settings.device != "cpu" else "cpu"
    _maintenance = Maintenance(name, device)
    _maintenance.start()


@signals.worker_shutdown.connect
def _stop_maintenance(sender: Any = None, **_: Any) -> None:
    if _maintenance is not None:
        _maintenance.stop_event.set()
        try:
            with database().session() as s:
                job_store.worker_gone(s, _maintenance.worker_name)
        except Exception:
            log.exception("could not deregister worker")


@signals.worker_process_init.connect
def _child_init(**_: Any) -> None:
    global _db
    _db = None  # never reuse the parent's connections in a forked child
    if not settings.torch_threads:
        import torch

        concurrency = int(os.environ.get("ARCHSCREEN_WORKER_CONCURRENCY", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, concurrency)))

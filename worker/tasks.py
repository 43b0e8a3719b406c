"""Celery tasks: named, take a job id, idempotent (the database claim decides who runs a job).

Imported by the worker's main process, which forks a fresh process per job: torch and the
training code are imported here, before any fork (CUDA is never initialised in this process),
so a job process starts in a fraction of a second even on a loaded host.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Any

import psutil
import torch

# torch.optim.Optimizer's first construction imports torch._dynamo (~2.3 s of a 4 s tiny job)
import torch._dynamo  # noqa: F401
from celery import signals
from celery.worker import state as worker_state
from celery.worker.request import Request

# heavy imports once, in the parent (copy-on-write in each job process); nothing here touches CUDA
import archscreen.core.screening
import archscreen.core.training.loop
import archscreen.core.tuning  # noqa: F401
from archscreen.settings import Settings
from archscreen.store import Database
from archscreen.store import jobs as job_store
from archscreen.store import search as search_store
from archscreen.store.ranking import studies_awaiting_auto_promotion
from archscreen.worker.app import configure, make_celery
from archscreen.worker.hooks import hold_once
from archscreen.worker.promotion import CHECK_TASK as PROMOTION_CHECK
from archscreen.worker.promotion import after_screening_finished
from archscreen.worker.queue import broker_queue_length, enqueue
from archscreen.worker.runner import SHUTDOWN, execute
from archscreen.worker.search import STEP_TASK as SEARCH_STEP
from archscreen.worker.search import search_step, step_after_job

log = logging.getLogger("archscreen.worker")

settings = Settings()  # from the environment; `archscreen worker` replaces it (use_settings)
app = make_celery(settings)
# job processes at once in this worker: each job process takes its share of the cores
_concurrency = int(os.environ.get("ARCHSCREEN_WORKER_CONCURRENCY", "1"))


def use_settings(new: Settings, *, concurrency: int) -> None:
    """Run this worker with ``new`` and ``concurrency`` job processes, handed over explicitly by
    ``archscreen worker`` before the worker starts (not through the environment). Job processes
    fork from this one and inherit both."""
    global settings, _concurrency
    settings, _concurrency = new, concurrency
    configure(app, new)


_db: tuple[int, Database] | None = None


def database() -> Database:
    """One engine per process, created after fork (a forked engine's sockets are not shareable)."""
    global _db
    if _db is None or _db[0] != os.getpid():
        # bounded connects: the main process checks each message's job in Celery's event loop, and
        # a database outage must not hang it (the check then lets the message through)
        _db = (
            os.getpid(),
            Database(
                settings.resolved_database_url,
                connect_timeout_s=settings.db_connect_timeout_s,
                pool_timeout_s=settings.db_pool_timeout_s,
            ),
        )
    return _db[1]


_stopping = threading.Event()  # set in the main process when a shutdown begins


def _job_id(request: Any) -> int | None:
    """The message's one argument: a job id (a promotion check's is a study id)."""
    try:
        return int(request.args[0])
    except Exception:
        return None


def _drop(request: Request) -> None:
    """Ack a message in the main process and forget it: no job process is started for it."""
    worker_state.task_ready(request)
    request.acknowledge()
    request._already_revoked = True


class JobRequest(Request):
    """A job message as the worker's main process sees it, before any job process is spent on it.

    Celery asks ``revoked()`` right before it hands a message to the pool: a job that cannot be
    claimed (cancelled, finished, running elsewhere, out of attempts) is acked and dropped here,
    so stale and duplicate messages drain at database speed, not one process start each. The
    child's claim still decides (this check may race with a cancel; it never wrongly drops).
    A database error lets the message through (the child decides, as before).
    """

    _claim_checked = False

    def revoked(self) -> bool:
        if super().revoked():
            return True
        if self._claim_checked:
            return False
        self._claim_checked = True
        if _stopping.is_set():
            # this worker is shutting down: no new job process. The message stays unacknowledged
            # (it holds the prefetch slot, so no more come) and the broker gets it back when the
            # connection closes, for another worker
            log.info("worker stopping: message %s left for another worker", self.id)
            worker_state.task_ready(self)
            self._already_revoked = True
            return True
        job_id = _job_id(self)
        if job_id is None:
            return False
        # handed to a job process now (unless dropped below): the watchdog's clock starts here; a
        # message still waiting for a free process is not counted, however long it waits
        self.handed_at = time.monotonic()
        try:
            with database().session() as s:
                ok = job_store.claimable(s, job_id)
                if ok:  # its message is here, not lost: the sweep must not re-send it
                    job_store.keep_sent(s, [job_id])
        except Exception:
            log.exception("job %s: could not check its state; handing it to a job process", job_id)
            return False
        if ok:
            return False
        log.info("job %s not claimable (cancelled, finished or taken): message dropped", job_id)
        _drop(self)
        return True


class ControlRequest(Request):
    """A control message (a study's promotion check: database work of milliseconds), handled by the
    worker's main process: acked at once and run by its maintenance thread, never in a job process
    (one process start each, 0.75 s on a loaded 2-core box, held up job messages behind 500 of them,
    issue 25). Checks for one study waiting together run once. Acking first loses nothing: every
    worker's maintenance pass runs the same check for every study awaiting its promotion."""

    def revoked(self) -> bool:
        if super().revoked():
            return True
        study_id = _job_id(self)
        log.info("promotion check for study %s: run by the main process, no job process", study_id)
        _drop(self)
        if study_id is not None:
            run_promotion_check(study_id)
        return True


class SearchStepRequest(Request):
    """A search study's step (worker/search.py): database work and one Optuna ask/tell, run by the
    main process's maintenance thread like a promotion check; steps of one study waiting together
    run once. Acking first loses nothing: the maintenance pass steps every unfinished search."""

    def revoked(self) -> bool:
        if super().revoked():
            return True
        study_id = _job_id(self)
        _drop(self)
        if study_id is not None:
            if _maintenance is not None and _maintenance.is_alive():
                _maintenance.step_search(study_id)
            else:
                threading.Thread(target=_search_step, args=(study_id,), daemon=True).start()
        return True


def _search_step(study_id: int) -> None:
    try:
        search_step(database(), settings, study_id)
    except Exception:  # the maintenance pass steps every unfinished search
        log.exception("study %s: search step failed; the maintenance pass retries it", study_id)


def run_promotion_check(study_id: int) -> None:
    """Queue a study's promotion check for the maintenance thread (or run it in a thread of its own
    before that thread starts): never in Celery's event loop, which must keep taking messages."""
    if _maintenance is not None and _maintenance.is_alive():
        _maintenance.check_promotion(study_id)
    else:
        threading.Thread(target=_promotion_check, args=(study_id,), daemon=True).start()


def _promotion_check(study_id: int) -> None:
    try:
        after_screening_finished(database(), settings, study_id)
    except Exception:  # the maintenance pass retries every study awaiting its promotion
        log.exception("study %s: promotion check failed; the maintenance pass retries it", study_id)


def _on_sigterm(signum: int, _frame: Any) -> None:
    SHUTDOWN.request()  # the job stops at its next epoch boundary (runner), then this process exits


# Tests only: the job process that creates this file first (writing its job id there) swallows its
# message: holds it and never runs it, as the message of docs/reliability.md's watchdog was seen held.
SWALLOW_ONCE_ENV = "ARCHSCREEN_TEST_SWALLOW_MESSAGE_ONCE"


def _run_job(job_id: int) -> str:
    """In the job's process: a SIGTERM (the worker is stopping) requeues the job at its next epoch
    boundary instead of killing it. Installed here, not at process start: billiard installs its own
    handler after the process initialiser."""
    hold_once(SWALLOW_ONCE_ENV, job_id, "job %s's message is swallowed (held, never run)")
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        return execute(database(), settings, job_id)
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.task(name="archscreen.screen_run", acks_late=True, Request=JobRequest)
def screen_run(job_id: int) -> str:
    state = _run_job(int(job_id))
    step_after_job(database(), settings, int(job_id))  # a search study's next trials
    return state


@app.task(name="archscreen.tune_job", acks_late=True, Request=JobRequest)
def tune_job(job_id: int) -> str:
    return _run_job(int(job_id))


@app.task(name=PROMOTION_CHECK, acks_late=True, Request=ControlRequest)
def promotion_check(study_id: int) -> list[int]:
    """Promote an ``auto`` study whose screening has ended (sent by the API's cancel route, which
    must not run it in the request). Idempotent: the study's promotion is a compare-and-set.
    :class:`ControlRequest` runs it in the worker's main process; this body runs only where a
    message reaches a job process anyway."""
    return after_screening_finished(database(), settings, int(study_id))


@app.task(name=SEARCH_STEP, acks_late=True, Request=SearchStepRequest)
def search_step_task(study_id: int) -> list[int]:
    """Ask and tell a search study's trials (worker/search.py); idempotent (the study's step lock
    and the unique trial links). :class:`SearchStepRequest` runs it in the main process."""
    return search_step(database(), settings, int(study_id))


def _held_job_requests() -> list[Request]:
    """Job messages this worker's main process holds (prefetched or handed to a job process)."""
    for _ in range(3):
        try:
            requests = {*worker_state.reserved_requests, *worker_state.active_requests}
            break
        except RuntimeError:  # the consumer changed the set while we copied it
            continue
    else:
        return []
    # a promotion check's argument is a study id, not a job's
    return [r for r in requests if getattr(r, "name", None) not in (PROMOTION_CHECK, SEARCH_STEP)]


def held_job_ids() -> list[int]:
    """Jobs whose message this worker's main process holds (prefetched or handed to a job process)."""
    return sorted({i for r in _held_job_requests() if (i := _job_id(r)) is not None})


def release_unclaimed(db: Database, s: Settings, now: float | None = None) -> list[int]:
    """The watchdog: a job whose message this worker handed to a job process more than
    ``held_message_timeout_s`` ago (a process start plus a grace) and which is still queued (no
    process claimed it) is released and its message re-sent; returns those job ids.

    Released: the message is acked and forgotten here, and the process that took it, if one did, is
    killed (it holds a pool slot and will never run the job; Celery replaces it). A new message goes
    to the broker. Should the held message run after all, its claim loses to the new one's (or the
    new one's claim loses): the compare-and-set makes the duplicate harmless. Celery's hang of a
    message handed to a recycling pool process (celery/celery#1310, #4185) otherwise holds the job
    until the hard time limit (6 h).
    """
    now = time.monotonic() if now is None else now
    overdue = {
        job_id: r
        for r in _held_job_requests()
        if now - getattr(r, "handed_at", now) > s.held_message_timeout_s
        and (job_id := _job_id(r)) is not None
    }
    if not overdue:
        return []
    with db.session() as sess:
        stuck = job_store.queued_of(sess, sorted(overdue))
    for job_id, _ in stuck:
        request = overdue[job_id]
        pid = request.worker_pid
        log.warning(
            "watchdog: job %s's message was handed to a job process (pid %s) %.0f s ago and no process "
            "claimed it: released and re-sent",
            job_id,
            pid,
            now - request.handed_at,
        )
        _drop(request)
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    enqueue(db, s, stuck)
    return [job_id for job_id, _ in stuck]


def maintenance_once(
    db: Database, s: Settings, worker_name: str, device: str, held: list[int] | None = None
) -> list[int]:
    """Record this worker as alive, requeue jobs of dead workers, send messages that never went out.

    ``held``: jobs whose message this worker holds; they are not lost, whatever the broker's queue
    length says (default: read from this process's Celery state).
    """
    with db.session() as sess:
        job_store.worker_seen(sess, worker_name, os.getpid(), device)
    if held is None:
        release_unclaimed(db, s)
    with db.session() as sess:
        job_store.keep_sent(sess, held_job_ids() if held is None else held)
    with db.session() as sess:
        requeued = job_store.reap(sess)
    if requeued:
        log.warning("reaper: requeued jobs %s (their worker stopped heartbeating)", requeued)
    with db.session() as sess:
        pending = job_store.unsent(sess)
    enqueue(db, s, pending)
    with db.session() as sess:
        lost = job_store.lost_messages(sess, broker_queue_length(s), grace_s=s.lost_message_grace_s)
    if lost:
        log.warning("broker queue is empty but %d job(s) are queued: re-sending them", len(lost))
        enqueue(db, s, lost)
    # auto-promotions whose trigger was not a worker finishing a job (a cancel, the reaper failing
    # a job) or whose first try failed: the compare-and-set makes this safe to repeat
    with db.session() as sess:
        awaiting = studies_awaiting_auto_promotion(sess)
    for study_id in awaiting:
        after_screening_finished(db, s, study_id)
    with db.session() as sess:
        searching = search_store.studies_searching(sess)
    for study_id in searching:  # a step whose message was lost, or that found the lock held
        try:
            search_step(db, s, study_id)
        except Exception:  # one study's failing step must not hold up the others'
            log.exception("study %s: search step failed; the next pass retries it", study_id)
    return requeued


class Maintenance(threading.Thread):
    """Runs in the worker's main process (never in a job's child): the maintenance pass every
    interval, and the promotion checks the main process was sent, as they come."""

    def __init__(self, worker_name: str, device: str) -> None:
        super().__init__(name="archscreen-maintenance", daemon=True)
        self.worker_name, self.device = worker_name, device
        self.stop_event = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._checks: set[int] = set()  # studies whose promotion check waits: one run each
        self._steps: set[int] = set()  # search studies whose step waits: one run each

    def check_promotion(self, study_id: int) -> None:
        with self._lock:
            self._checks.add(study_id)
        self._wake.set()

    def step_search(self, study_id: int) -> None:
        with self._lock:
            self._steps.add(study_id)
        self._wake.set()

    def stop(self) -> None:
        self.stop_event.set()
        self._wake.set()

    def _run_checks(self) -> None:
        with self._lock:
            checks, self._checks = self._checks, set()
            steps, self._steps = self._steps, set()
        for study_id in sorted(checks):
            _promotion_check(study_id)
        for study_id in sorted(steps):
            _search_step(study_id)

    def run(self) -> None:
        interval = min(settings.reaper_interval_s, settings.worker_seen_s / 3)
        parent = os.environ.get("ARCHSCREEN_PARENT_PID")
        next_pass = time.monotonic()
        while not self.stop_event.is_set():
            if parent and os.getppid() != int(parent):
                # started by `archscreen up`, which is gone (killed hard): do not linger as an orphan
                log.warning("parent process %s is gone; shutting down", parent)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            if time.monotonic() >= next_pass:
                try:
                    maintenance_once(database(), settings, self.worker_name, self.device)
                except Exception:
                    log.exception("maintenance pass failed; retrying")
                next_pass = time.monotonic() + interval
            self._run_checks()
            self._wake.wait(max(0.0, next_pass - time.monotonic()))
            self._wake.clear()


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
        _maintenance.stop()
        try:
            with database().session() as s:
                job_store.worker_gone(s, _maintenance.worker_name)
        except Exception:
            log.exception("could not deregister worker")


def _child_pids(parent: int) -> list[int]:
    """Live (not zombie) child processes of ``parent``."""
    out = []
    for child in psutil.Process(parent).children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.status() != psutil.STATUS_ZOMBIE:
                out.append(child.pid)
    return out


@signals.worker_shutting_down.connect
def _stop_jobs(sig: Any = None, how: Any = None, **_: Any) -> None:
    """The main process is stopping (SIGTERM from systemd, docker or `archscreen up`): ask each job
    process to stop at its next epoch boundary and requeue its job, rather than waiting for whole
    jobs (Celery's warm shutdown) or killing them."""
    _stopping.set()
    pids = _child_pids(os.getpid())
    log.info("%s shutdown: asking job processes %s to stop at their next epoch boundary", how, pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


@signals.worker_process_init.connect
def _child_init(**_: Any) -> None:
    global _db
    if _db is not None:
        # the parent's pooled connections: forget them without closing them (closing would end
        # the parent's sessions on the shared sockets), then never use them here
        _db[1].engine.dispose(close=False)
    _db = None  # never reuse the parent's connections in a forked child
    if not settings.torch_threads:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, _concurrency)))

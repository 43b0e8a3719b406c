"""Real worker processes on a real database and broker, driven from the store (no API process).

Jobs are created with the store functions and sent with ``worker.queue.enqueue``, exactly as the
API does; the worker is ``python -m archscreen worker`` (Celery prefork, a fresh child per job).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select

from archscreen.settings import Settings
from archscreen.store import Database, Job
from archscreen.store import studies as study_store
from archscreen.store.auth import get_or_create_tenant
from archscreen.store.models import EpochMetric, WorkerSeen
from archscreen.store.records import StudyRecord
from archscreen.worker.queue import enqueue
from archscreen.worker.search import request_step
from tests.services import worker_argv

T = TypeVar("T")

TINY = {"name": "logreg", "layers": ["flatten"], "head": "classifier"}
# about a second per epoch of 30 steps on one core (batch 32, digits): long enough to stop mid-run
SLOW = {
    "name": "slow-cnn",
    "layers": [
        {"conv2d": {"out": 96, "kernel": 3, "padding": 1}},
        "relu",
        {"conv2d": {"out": 96, "kernel": 3, "padding": 1}},
        "relu",
        "flatten",
        {"linear": 64},
        "relu",
    ],
    "head": "classifier",
}


def wait_for(predicate: Callable[[], T], timeout: float, what: str, logs: Callable[[], str] = str) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{logs()}")


def group_alive(pgid: int) -> list[int]:
    from archscreen.service_cli import group_members

    return group_members(pgid)


class Deployment:
    """One data dir: SQLite (or the given URL), the embedded broker (or the given URL), artifacts."""

    def __init__(self, tmp: Path, database_url: str | None = None, broker_url: str | None = None, **env: str):
        self.tmp = tmp
        self.env = {
            **os.environ,
            "ARCHSCREEN_DATA_DIR": str(tmp / "data"),
            "ARCHSCREEN_DATABASE_URL": database_url or "",
            "ARCHSCREEN_BROKER_URL": broker_url or "",
            "ARCHSCREEN_QUEUE": f"test-{uuid.uuid4().hex[:8]}",
            "ARCHSCREEN_LEASE_S": "10",
            "ARCHSCREEN_HEARTBEAT_S": "0.5",
            "ARCHSCREEN_REAPER_INTERVAL_S": "1",
            "ARCHSCREEN_WORKER_SEEN_S": "6",
            **{f"ARCHSCREEN_{k.upper()}": v for k, v in env.items()},
        }
        self.settings = Settings(
            data_dir=tmp / "data",
            database_url=database_url,
            broker_url=broker_url,
            queue=self.env["ARCHSCREEN_QUEUE"],
        )
        self.settings.ensure_dirs()
        self.db = Database(self.settings.resolved_database_url)
        self.db.migrate()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        with self.db.session() as s:
            self.tenant_id = get_or_create_tenant(s, "t").id

    # ---------------------------------------------------------------- jobs

    def study(self, dataset: str = "digits", **screening: Any) -> int:
        config = {"max_epochs": 1, "patience": 50, "batch_size": 32, "seeds": [0], "base": "sgd"}
        config.update(screening)
        with self.db.session() as s:
            return study_store.create_study(
                s,
                self.tenant_id,
                name=f"s-{uuid.uuid4().hex[:6]}",
                dataset=dataset,
                policy={"top_k": 1},
                screening=config,
            ).id

    def add_jobs(
        self, study_id: int, specs: list[dict[str, Any]], *, send: bool = True, cancelled: bool = False
    ) -> list[int]:
        """Add candidates (their screening jobs) and send their messages.

        ``cancelled``: cancel them in the same transaction (no worker can have taken one).
        """
        from archscreen.store import jobs as job_store

        ids: list[tuple[int, str]] = []
        with self.db.session() as s:
            study = study_store.study_by_id(s, study_id)
            assert study is not None
            for i, spec in enumerate(specs):
                _, _, jobs = study_store.add_candidate(
                    s,
                    study,
                    name=f"{spec['name']}-{i}",
                    spec=spec,
                    spec_hash=uuid.uuid4().hex,
                    num_params=1,
                    summary=[],
                    max_attempts=3,
                )
                ids += [(j.id, j.kind) for j in jobs]
            if cancelled:
                s.flush()
                for job_id, _ in ids:
                    job_store.request_cancel(s, job_id)
        if send:
            enqueue(self.db, self.settings, ids)
        return [i for i, _ in ids]

    def start_search(self, study_id: int) -> StudyRecord:
        """Send the search study's first step, as the API does when it creates the study."""
        with self.db.session() as s:
            study = study_store.study_by_id(s, study_id)
        assert study is not None and request_step(self.settings, study)
        return study

    def auto_promoted(self, study_id: int) -> bool:
        """The study's automatic promotion ran: what a search study's tests wait for."""
        with self.db.session() as s:
            found = study_store.study_by_id(s, study_id)
            return found is not None and found.auto_promoted_at is not None

    def job(self, job_id: int) -> Job:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            assert job is not None
            s.expunge(job)
            return job

    def curves(self, job_id: int) -> list[tuple[int, float]]:
        with self.db.session() as s:
            rows = s.execute(
                select(EpochMetric.epoch, EpochMetric.seconds)
                .where(EpochMetric.job_id == job_id)
                .order_by(EpochMetric.epoch)
            ).all()
        return [(r[0], r[1]) for r in rows]

    def job_dir(self, job_id: int) -> Path:
        return self.settings.resolved_artifacts_dir / "jobs" / str(job_id)

    def workers_seen(self) -> int:
        with self.db.session() as s:
            return len(s.scalars(select(WorkerSeen)).all())

    # ---------------------------------------------------------------- processes

    def start_worker(
        self, name: str = "w", concurrency: int = 1, cpus: set[int] | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            worker_argv(name, concurrency),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        self.procs[name] = proc
        return proc

    def start_up(self, port: int, name: str = "up") -> subprocess.Popen[bytes]:
        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "archscreen", "up", "--port", str(port), "--workers", "1"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs[name] = proc
        return proc

    def wait_worker_ready(self, count: int = 1, timeout: float = 60) -> None:
        """The worker's maintenance thread runs once Celery is ready to take messages."""
        wait_for(lambda: self.workers_seen() >= count, timeout, "the worker to be ready", self.logs)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-4000:]}" for p in sorted(self.tmp.glob("*.log")))

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            for pid in children_of(proc.pid):  # `up`'s worker lives in its own session
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        self.procs.clear()
        self.db.dispose()


_known_children: dict[int, set[int]] = {}


def children_of(pid: int) -> set[int]:
    """Children of ``pid`` seen so far (remembered: a killed parent's children are reparented)."""
    seen = _known_children.setdefault(pid, set())
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if int(text[text.rindex(")") + 2 :].split()[1]) == pid:
            seen.add(int(stat.parent.name))
    return seen


@contextlib.contextmanager
def deployment(tmp: Path, **kw: Any) -> Iterator[Deployment]:
    d = Deployment(tmp, **kw)
    try:
        yield d
    finally:
        d.stop()


BACKENDS = ["sqlite+filesystem", "postgresql+redis"]


@contextlib.contextmanager
def backend_deployment(backend: str, tmp: Path, **kw: Any) -> Iterator[Deployment]:
    """SQLite + the embedded broker, or a throwaway PostgreSQL database + Redis (as deployed)."""
    if backend not in BACKENDS:  # a misspelt name must not silently run the other backend
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "sqlite+filesystem":
        with deployment(tmp, **kw) as d:
            yield d
        return
    from tests.services import REDIS_URL, fresh_postgres_url, need

    need("Redis", "127.0.0.1", 6379)
    pg = fresh_postgres_url()
    try:
        with deployment(tmp, database_url=next(pg), broker_url=REDIS_URL, **kw) as d:
            yield d
    finally:
        next(pg, None)

"""Fixtures for the service tests: a real database (SQLite file, and PostgreSQL when reachable)
and a real broker (the embedded filesystem broker, and Redis when reachable).

PostgreSQL (127.0.0.1:5432, database ``test``) and Redis (127.0.0.1:6379) are used when they
answer. With ``ARCHSCREEN_REQUIRE_SERVICES=1`` (set by ``.ci/run``) an unreachable service fails
the run instead of skipping its tests, so CI always exercises the production path.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_ADMIN_URL = os.environ.get("ARCHSCREEN_TEST_POSTGRES", "postgresql+psycopg://root@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("ARCHSCREEN_TEST_REDIS", "redis://127.0.0.1:6379/0")
# Under CI (CI=true, or the explicit flag .ci/run sets) a missing service fails the run.
REQUIRED = os.environ.get("ARCHSCREEN_REQUIRE_SERVICES") == "1" or os.environ.get("CI") == "true"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def need(service: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    message = f"{service} is not reachable at {host}:{port}"
    if REQUIRED:
        pytest.fail(f"{message} and ARCHSCREEN_REQUIRE_SERVICES=1: start it (see docs/deploy.md)")
    pytest.skip(f"{message} (set ARCHSCREEN_REQUIRE_SERVICES=1 to make this a failure)")


def _pg_admin() -> object:
    import psycopg

    url = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    return psycopg.connect(url, autocommit=True)


def fresh_postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database (created and dropped around the test)."""
    need("PostgreSQL", "127.0.0.1", 5432)
    name = f"archscreen_t_{uuid.uuid4().hex[:10]}"
    with _pg_admin() as conn:  # type: ignore[attr-defined]
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with _pg_admin() as conn:  # type: ignore[attr-defined]
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'archscreen.db'}"
    else:
        yield from fresh_postgres_url()


@pytest.fixture
def redis_url() -> str:
    need("Redis", "127.0.0.1", 6379)
    return REDIS_URL


@pytest.fixture
def migrated(database_url: str):  # type: ignore[no-untyped-def]
    from archscreen.store import Database

    db = Database(database_url)
    db.migrate()
    yield db
    db.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def worker_argv(name: str, concurrency: int) -> list[str]:
    """``archscreen worker`` on the CPU with a unique Celery node name (shared by the test services)."""
    import sys

    return [
        sys.executable,
        "-m",
        "archscreen",
        "worker",
        "--cpu",
        "--concurrency",
        str(concurrency),
        "--hostname",
        f"{name}-{uuid.uuid4().hex[:6]}@test",
        "--log-level",
        "info",
    ]


class RunningService:
    """``archscreen api`` + ``archscreen worker`` as real processes on the given database and broker."""

    def __init__(self, tmp: Path, database_url: str, broker_url: str | None, **settings: str) -> None:
        import sys

        self.tmp, self.python = tmp, sys.executable
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "ARCHSCREEN_DATA_DIR": str(tmp / "data"),
            "ARCHSCREEN_DATABASE_URL": database_url,
            "ARCHSCREEN_BROKER_URL": broker_url or "",
            "ARCHSCREEN_QUEUE": f"test-{uuid.uuid4().hex[:8]}",  # never share a Redis queue between tests
            "ARCHSCREEN_LEASE_S": "4",
            "ARCHSCREEN_HEARTBEAT_S": "0.5",
            "ARCHSCREEN_REAPER_INTERVAL_S": "1",
            "ARCHSCREEN_WORKER_SEEN_S": "6",
            **{f"ARCHSCREEN_{k.upper()}": v for k, v in settings.items()},
        }
        self.procs: dict[str, object] = {}
        self.token = ""

    def cli(self, *args: str, check: bool = True) -> object:
        import subprocess

        return subprocess.run(
            [self.python, "-m", "archscreen", *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def start_api(self) -> None:
        import subprocess

        log = open(self.tmp / "api.log", "ab")  # noqa: SIM115 - closed when the process is stopped
        self.procs["api"] = subprocess.Popen(
            [self.python, "-m", "archscreen", "api", "--port", str(self.port), "--log-level", "warning"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_worker(self, name: str = "worker", concurrency: int = 2, **env: str) -> None:
        """``env``: extra environment for this worker only."""
        import subprocess

        log = open(self.tmp / f"{name}.log", "ab")  # noqa: SIM115
        self.procs[name] = subprocess.Popen(
            worker_argv(name, concurrency),
            env={**self.env, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, name: str, sig: int) -> None:
        """Signal the process group; a process that outlives a polite signal by 15 s is killed."""
        import signal
        import subprocess

        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # type: ignore[attr-defined]
        try:
            proc.wait(15)  # type: ignore[attr-defined]
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # type: ignore[attr-defined]
            proc.wait(15)  # type: ignore[attr-defined]

    def wait_ready(self, timeout: float = 60) -> None:
        import time

        import httpx

        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:  # type: ignore[attr-defined]
                    raise AssertionError(f"{name} exited early:\n{self.logs()}")
            try:
                r = httpx.get(f"{self.url}/readyz", timeout=2)
                if r.status_code == 200:
                    return
                last = r.text
            except httpx.HTTPError as exc:
                last = repr(exc)
            time.sleep(0.3)
        raise AssertionError(f"service not ready after {timeout} s: {last}\n{self.logs()}")

    def wait_healthy(self, timeout: float = 60) -> None:
        """The API answers /healthz (no worker needed, unlike :meth:`wait_ready`)."""
        import time

        import httpx

        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"API not healthy after {timeout} s\n{self.logs()}")
            time.sleep(0.2)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.tmp.glob("*.log")))

    def stop(self) -> None:
        import signal

        for name in list(self.procs):
            self.kill(name, signal.SIGTERM)


BACKENDS = ["sqlite+filesystem", "postgresql+redis"]


def service_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningService]:
    gen: Iterator[str] | None = None
    if request.param == "sqlite+filesystem":
        db_url, broker = f"sqlite:///{tmp_path / 'data' / 'archscreen.db'}", None
    else:
        need("Redis", "127.0.0.1", 6379)
        gen = fresh_postgres_url()
        db_url, broker = next(gen), REDIS_URL
    svc = RunningService(tmp_path, db_url, broker)
    try:
        svc.cli("migrate")
        out = svc.cli("token", "create", "--tenant", "e2e")
        svc.token = out.stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
        yield svc
    finally:
        svc.stop()
        if gen is not None:
            with contextlib.suppress(StopIteration):
                next(gen)

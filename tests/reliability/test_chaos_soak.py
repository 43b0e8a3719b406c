"""A soak under faults: 200 small candidates through 2 workers on PostgreSQL + Redis while a job
process is killed (-9), a worker's main process is killed (-9) and restarted, Redis is restarted
(no persistence: its queue is lost), the API is restarted, and a worker is killed (-9) while it holds
a message it took from Redis and never started (its job process swallows it: a test hook).

Asserted at the end: 0 lost (every candidate's run succeeded), 0 duplicated (one screening run per
candidate and seed, one curve row per epoch), 0 stuck (nothing queued or running), and curve points
read during the run are unchanged at the end (never rewritten).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from archscreen.worker.tasks import SWALLOW_ONCE_ENV
from tests.services import RunningService, free_port, fresh_postgres_url, need

pytestmark = pytest.mark.slow

N = 200
QUICK = {"max_epochs": 1, "max_steps_per_epoch": 2, "patience": 5}


class PrivateRedis:
    """A redis-server of this test's own (the machine's shared one is never restarted)."""

    def __init__(self, tmp: Path) -> None:
        self.port, self.tmp = free_port(), tmp
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while (
            subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True).stdout.strip()
            != b"PONG"
        ):
            assert time.monotonic() < deadline, "private redis-server did not start"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tuple[RunningService, PrivateRedis, str]]:
    need("PostgreSQL", "127.0.0.1", 5432)
    gen = fresh_postgres_url()
    db_url = next(gen)
    redis = PrivateRedis(tmp_path)
    redis.start()
    # a message the Redis restart lost is re-sent after this grace (30 s by default)
    svc = RunningService(tmp_path, db_url, f"redis://127.0.0.1:{redis.port}/0", lost_message_grace_s="5")
    try:
        svc.cli("migrate")
        svc.token = svc.cli("token", "create", "--tenant", "soak").stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
        svc.start_api()
        svc.start_worker("w1", concurrency=1)
        svc.start_worker("w2", concurrency=1)
        svc.wait_ready()
        yield svc, redis, db_url
    finally:
        svc.stop()
        redis.stop()
        with contextlib.suppress(StopIteration):
            next(gen)


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def counts(svc: RunningService, study_id: int) -> dict[str, int]:
    r = httpx.get(
        f"{svc.url}/api/v1/studies/{study_id}", headers={"Authorization": f"Bearer {svc.token}"}, timeout=30
    )
    return r.json()["jobs_by_state"] if r.status_code == 200 else {}


T0 = time.monotonic()


def wait_until(predicate, timeout: float, what: str, svc: RunningService) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{svc.logs()}"
        time.sleep(0.5)
    print(f"{time.monotonic() - T0:6.1f} s: {what}")


def test_soak_of_200_candidates_through_faults_loses_and_duplicates_nothing(
    stack: tuple[RunningService, PrivateRedis, str],
) -> None:
    svc, redis, db_url = stack
    auth = {"Authorization": f"Bearer {svc.token}"}
    study = httpx.post(
        f"{svc.url}/api/v1/studies",
        json={"name": "soak", "dataset": "digits", "screening": QUICK},
        headers=auth,
        timeout=60,  # the API's first request imports the spec code: over httpx's 5 s on a loaded box
    ).json()
    specs = [
        {"spec": {"name": f"mlp{i}", "layers": ["flatten", {"linear": 4 + i}, "relu"], "head": "classifier"}}
        for i in range(N)
    ]
    for start in range(0, N, 50):
        r = httpx.post(
            f"{svc.url}/api/v1/studies/{study['id']}/candidates",
            json=specs[start : start + 50],
            headers=auth,
            timeout=60,
        )
        assert r.status_code == 201, r.text
    done = lambda: counts(svc, study["id"]).get("succeeded", 0)  # noqa: E731

    # 1. kill -9 a job process mid-run
    wait_until(lambda: done() >= 10, 240, "10 runs", svc)
    w1 = svc.procs["w1"].pid  # type: ignore[attr-defined]
    wait_until(
        lambda: any(children(c) or True for c in children(w1)) and children(w1), 60, "a job process", svc
    )
    for child in children(w1):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)

    # 2. kill -9 a worker's main process, start a replacement
    wait_until(lambda: done() >= 40, 240, "40 runs", svc)
    svc.kill("w2", signal.SIGKILL)
    svc.start_worker("w3", concurrency=1)

    # 3. restart Redis without persistence: every queued message is gone
    wait_until(lambda: done() >= 80, 300, "80 runs", svc)
    redis.stop()
    time.sleep(2)
    redis.start()

    # 4. restart the API
    wait_until(lambda: done() >= 110, 300, "110 runs", svc)
    svc.kill("api", signal.SIGTERM)
    svc.start_api()
    svc.wait_healthy()

    # 5. kill -9 a worker while it holds a message it took and never started: its job process
    # swallows it (test hook), so the job stays queued, its message unacked in Redis
    held = svc.tmp / "held-job"
    svc.start_worker("w4", concurrency=1, **{SWALLOW_ONCE_ENV: str(held)})
    wait_until(lambda: held.exists() and held.read_text(), 120, "w4 to hold a message", svc)
    held_job = int(held.read_text())
    svc.kill("w4", signal.SIGKILL)

    engine = create_engine(db_url)
    with engine.connect() as conn:
        snapshot = {
            (job, epoch): (tl, vl)
            for job, epoch, tl, vl in conn.execute(
                text("SELECT job_id, epoch, train_loss, val_loss FROM epoch_metrics")
            )
        }
    assert snapshot, "curve points existed mid-run"

    wait_until(lambda: done() == N, 600, f"all {N} runs", svc)
    final = counts(svc, study["id"])
    assert final == {"succeeded": N}, f"lost or stuck: {final}"
    with engine.connect() as conn:
        runs = conn.execute(
            text("SELECT candidate_id, count(*) FROM jobs WHERE kind = 'screen' GROUP BY candidate_id")
        )
        assert {n for _, n in runs} == {1}, "one screening run per candidate (one seed)"
        held_state = conn.execute(text("SELECT state FROM jobs WHERE id = :id"), {"id": held_job}).scalar()
        assert held_state == "succeeded", "the job whose message the killed worker held ran after all"
        rows = list(conn.execute(text("SELECT job_id, epoch, train_loss, val_loss FROM epoch_metrics")))
        epochs = conn.execute(
            text(
                "SELECT j.id, j.epoch, count(m.id) FROM jobs j LEFT JOIN epoch_metrics m "
                "ON m.job_id = j.id GROUP BY j.id, j.epoch"
            )
        )
        for job_id, epoch, points in epochs:
            assert points == epoch, f"job {job_id}: {points} curve rows for {epoch} epochs"
    engine.dispose()
    now = {(job, epoch): (tl, vl) for job, epoch, tl, vl in rows}
    rewritten = [key for key, value in snapshot.items() if now.get(key) != value]
    assert not rewritten, f"curve points rewritten: {rewritten[:5]}"

"""A worker on a busy host keeps working: a job process starts cheaply (torch is imported before
the fork) and Celery waits long enough for it (issue 18, item 2)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.services import fresh_postgres_url
from tests.worker.procs import TINY, deployment, wait_for

pytestmark = pytest.mark.slow

BUSY = "import os\nos.sched_setaffinity(0, {0})\nwhile True:\n    pass\n"


def test_the_worker_parent_imports_torch_without_initialising_cuda() -> None:
    code = (
        "import sys, archscreen.worker.tasks as t, torch;"
        "print('torch' in sys.modules, 'archscreen.core.screening' in sys.modules,"
        " torch.cuda.is_initialized(), t.app.conf.worker_proc_alive_timeout)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split() == ["True", "True", "False", "60.0"], out.stderr


def test_a_worker_on_a_loaded_cpu_still_completes_jobs(tmp_path: Path, redis_url: str) -> None:
    """Five busy loops share CPU 0 with the worker (bounded: killed at the end, nothing networked).

    On Redis (Celery's event loop, where the start timeout applies) and PostgreSQL, as deployed.
    Before the fix each job process imported torch at start (about 1 s of CPU, so 5-6 s at a
    sixth of a core) and Celery killed it after 4 s, again and again: no job ever ran.
    """
    pg = fresh_postgres_url()
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: next(pg, None))
        d = stack.enter_context(deployment(tmp_path, database_url=next(pg), broker_url=redis_url))
        d.start_worker(concurrency=1, cpus={0})
        d.wait_worker_ready()
        # each in its own session, as unrelated services are (the kernel shares a CPU between sessions)
        busy = [subprocess.Popen([sys.executable, "-c", BUSY], start_new_session=True) for _ in range(5)]
        try:
            jobs = d.add_jobs(d.study(), [TINY, TINY])
            wait_for(
                lambda: all(d.job(j).state == "succeeded" for j in jobs),
                90,
                "two small jobs on a loaded CPU",
                d.logs,
            )
        finally:
            for p in busy:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                p.wait()
        log = (tmp_path / "w.log").read_text()
        assert "Timed out waiting for UP message" not in log, log[-3000:]
        assert all(d.job(j).attempts == 1 for j in jobs)

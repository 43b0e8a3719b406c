"""A message a worker holds and never runs is released and re-sent by its watchdog (issue 25, item 6).

The job process swallows its message through a test hook (``ARCHSCREEN_TEST_SWALLOW_MESSAGE_ONCE``):
it takes the message and never claims the job, as a message handed to a recycling pool process was
seen held in CI. Nothing else would free it before the hard time limit (6 h).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from archscreen.worker.tasks import SWALLOW_ONCE_ENV
from tests.worker.procs import TINY, deployment, wait_for

pytestmark = pytest.mark.slow


def test_a_message_a_job_process_swallowed_is_released_and_the_job_runs(tmp_path: Path) -> None:
    marker = tmp_path / "swallowed"
    with deployment(tmp_path, held_message_timeout_s="3", **{"test_swallow_message_once": str(marker)}) as d:
        assert d.env[SWALLOW_ONCE_ENV] == str(marker)
        d.start_worker(concurrency=1)
        d.wait_worker_ready()
        job_id = d.add_jobs(d.study(), [TINY])[0]
        wait_for(marker.exists, 30, "a job process to swallow the message", d.logs)
        assert d.job(job_id).state == "queued"
        # a single job slot, held by the swallowing process: the watchdog must free it too
        wait_for(lambda: d.job(job_id).state == "succeeded", 60, "the job to run after all", d.logs)
        job = d.job(job_id)
        assert job.attempts == 1, "the swallowed message never claimed the job"
        log = (tmp_path / "w.log").read_text()
        assert log.count("no process claimed it: released and re-sent") == 1, d.logs()

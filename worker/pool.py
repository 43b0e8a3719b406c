"""Celery's prefork pool, replacing a finished job's process at once.

A worker runs each job in a fresh process (``worker_max_tasks_per_child=1``: no GPU memory or
state left behind). With an async-capable broker (Redis) Celery's ``AsynPool`` replaces an exited
process from a ``maintain_pool`` timer that fires every 5 s, so each job could wait up to 5 s for a
process to run in: 2.3 s a job per worker on PostgreSQL + Redis against 0.8 s on the filesystem
transport, whose pool supervises its processes itself. ``maintain_pool`` only forks when a process
is missing, so checking every 0.2 s costs nothing measurable and brought Redis to 0.9 s a job.
Selected by ``worker_pool`` in :func:`archscreen.worker.app.make_celery`.
"""

from __future__ import annotations

from typing import Any

from celery.concurrency import asynpool, prefork

MAINTAIN_POOL_EVERY_S = 0.2


class PromptRespawnAsynPool(asynpool.AsynPool):
    @property
    def timers(self) -> dict[Any, float]:
        return {self.maintain_pool: MAINTAIN_POOL_EVERY_S}


class TaskPool(prefork.TaskPool):
    """``--pool archscreen.worker.pool:TaskPool``: prefork with :class:`PromptRespawnAsynPool`."""

    Pool = PromptRespawnAsynPool

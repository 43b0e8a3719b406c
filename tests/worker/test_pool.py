"""The worker pool replaces a finished job's process promptly (its speed: bench/worker_throughput.py)."""

from __future__ import annotations

from celery import concurrency

from archscreen.settings import Settings
from archscreen.worker.app import make_celery
from archscreen.worker.pool import MAINTAIN_POOL_EVERY_S, PromptRespawnAsynPool, TaskPool


def test_the_app_selects_the_prompt_respawn_pool(tmp_path) -> None:  # type: ignore[no-untyped-def]
    app = make_celery(Settings(data_dir=tmp_path))
    assert concurrency.get_implementation(app.conf.worker_pool) is TaskPool
    assert TaskPool.Pool is PromptRespawnAsynPool
    timers = PromptRespawnAsynPool.timers.fget(PromptRespawnAsynPool.__new__(PromptRespawnAsynPool))  # type: ignore[attr-defined]
    assert list(timers.values()) == [MAINTAIN_POOL_EVERY_S] and MAINTAIN_POOL_EVERY_S <= 0.5

"""Sending job messages: always after the rows are committed, and recorded as sent.

If the broker is unreachable the job stays ``queued`` with ``enqueued_at`` null, and
the reaper in every worker re-sends it later; a duplicate message is harmless (the
claim is a compare-and-set).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache

from celery import Celery

from archscreen.settings import Settings
from archscreen.store import Database
from archscreen.store import jobs as job_store
from archscreen.worker.app import make_celery, send_job

log = logging.getLogger("archscreen.queue")


@lru_cache(maxsize=8)
def _celery_for(settings_json: str) -> Celery:
    return make_celery(Settings.model_validate_json(settings_json))


def celery_for(settings: Settings) -> Celery:
    return _celery_for(settings.model_dump_json())


def enqueue(db: Database, settings: Settings, jobs: Sequence[tuple[int, str]]) -> int:
    """Send one message per ``(job_id, kind)``; returns how many were sent."""
    if not jobs:
        return 0
    app = celery_for(settings)
    sent: list[int] = []
    try:
        for job_id, kind in jobs:
            send_job(app, job_id, kind, settings.queue)
            sent.append(job_id)
    except Exception as exc:  # broker down: the reaper re-sends what is left
        log.warning(
            "broker unavailable (%s); %d job(s) will be sent by the reaper", exc, len(jobs) - len(sent)
        )
    with db.session() as s:
        job_store.mark_enqueued(s, sent)
    return len(sent)


def broker_queue_length(settings: Settings) -> int | None:
    """Messages waiting in the broker for our queue (``None`` if it cannot be told cheaply).

    Used to notice messages the broker lost (a Redis restart without persistence, a deleted
    broker folder): queued jobs with an empty queue have no message left.
    """
    try:
        if settings.embedded_broker:
            folder = settings.broker_folder / "queue"
            return sum(1 for f in folder.iterdir() if f.name.endswith(f".{settings.queue}.msg"))
        url = settings.resolved_broker_url
        if url.startswith(("redis://", "rediss://")):
            import redis

            client = redis.Redis.from_url(url, socket_timeout=2)
            try:
                return int(client.llen(settings.queue))
            finally:
                client.close()
    except Exception as exc:
        log.warning("cannot read the broker's queue length: %s", exc)
    return None

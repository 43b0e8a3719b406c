"""The Celery application (``celery -A archscreen.worker.app worker`` or ``archscreen worker``).

Configured as Celery's docs advise for long, expensive jobs: late acks, a
prefetch of one, a fresh child process per job (no GPU memory left behind),
soft and hard time limits, no result backend (state lives in the database).
"""

from __future__ import annotations

from celery import Celery

from archscreen.settings import Settings

TASK_FOR_KIND = {"screen": "archscreen.screen_run", "tune": "archscreen.tune_job"}


def make_celery(settings: Settings | None = None) -> Celery:
    app = Celery("archscreen", set_as_current=False)
    configure(app, settings or Settings())
    return app


def configure(app: Celery, settings: Settings) -> None:
    """Set ``app``'s configuration from ``settings`` (again, before the worker starts: ``archscreen
    worker`` hands its settings to :func:`archscreen.worker.tasks.use_settings`)."""
    app.conf.update(
        broker_url=settings.resolved_broker_url,
        broker_transport_options=settings.broker_transport_options(),
        broker_connection_retry_on_startup=True,
        task_default_queue=settings.queue,
        task_acks_late=True,
        # A message is acked even when its child process dies: the database lease + reaper
        # requeue the job (bounded by max_attempts), so a job that kills its process cannot
        # loop forever through broker redeliveries.
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=1,
        # prefork that replaces a finished job's process at once, not on a 5 s timer (worker/pool.py)
        worker_pool="archscreen.worker.pool:TaskPool",
        # torch is imported before forking (worker/tasks.py), so a job process starts in well under a
        # second; Celery's 4 s default still killed every new process on a loaded host (issue 18)
        worker_proc_alive_timeout=settings.worker_proc_alive_timeout_s,
        task_soft_time_limit=settings.job_soft_time_limit_s,
        task_time_limit=settings.job_time_limit_s,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        worker_send_task_events=False,
        # The filesystem transport has no broadcast; nothing here needs remote control.
        worker_enable_remote_control=not settings.embedded_broker,
        worker_hijack_root_logger=False,
    )
    app.conf.archscreen_settings = settings


def send_job(app: Celery, job_id: int, kind: str, queue: str) -> None:
    app.send_task(TASK_FOR_KIND[kind], args=[job_id], queue=queue)

"""Unauthenticated operational endpoints: /healthz, /readyz, /metrics (Prometheus)."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

from archscreen.api.schemas import HealthOut
from archscreen.store import JOB_STATES, Database
from archscreen.store import jobs as job_store
from archscreen.store.models import JOB_KINDS

router = APIRouter(tags=["health"])

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, float("inf"))


# async: answered on the event loop, so it stays prompt while every thread-pool thread waits on
# a hung database
@router.get("/healthz", response_model=HealthOut)
async def healthz() -> HealthOut:
    """The process is up (no dependencies checked)."""
    return HealthOut(status="ok")


@router.get("/readyz", response_model=HealthOut, responses={503: {"model": HealthOut}})
def readyz(request: Request) -> Any:
    """Ready to do work: the database answers, the broker accepts a connection, a worker was seen."""
    app = request.app
    checks: dict[str, str] = {}
    db: Database = app.state.db
    try:
        db.ping()
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        from archscreen.worker.queue import celery_for

        with celery_for(app.state.settings).connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"unreachable: {type(exc).__name__}"
    if checks["database"] == "ok":
        with db.session() as s:
            workers = job_store.live_workers(s, app.state.settings.worker_seen_s)
        checks["workers"] = (
            f"{len(workers)} seen" if workers else "none seen recently (start `archscreen worker`)"
        )
    else:
        workers = []
    ok = checks["database"] == "ok" and checks["broker"] == "ok" and bool(workers)
    body = HealthOut(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


class JobCollector:
    """Read at scrape time from the database (jobs run in other processes)."""

    def __init__(self, db: Database, worker_seen_s: float) -> None:
        self.db, self.worker_seen_s = db, worker_seen_s

    def collect(self) -> Any:
        by_state = GaugeMetricFamily("archscreen_jobs", "Jobs by kind and state.", labels=["kind", "state"])
        depth = GaugeMetricFamily(
            "archscreen_queue_depth", "Jobs waiting for a worker (queued).", labels=["kind"]
        )
        workers = GaugeMetricFamily(
            "archscreen_workers", "Worker processes seen within the readiness window."
        )
        durations = HistogramMetricFamily(
            "archscreen_job_duration_seconds", "Training time of finished jobs.", labels=["kind"]
        )
        with self.db.session() as s:
            stats = job_store.job_stats(s)
            live = len(job_store.live_workers(s, self.worker_seen_s))
        for kind in JOB_KINDS:
            for state in JOB_STATES:
                by_state.add_metric([kind, state], stats.counts.get((kind, state), 0))
            depth.add_metric([kind], stats.counts.get((kind, "queued"), 0))
            elapsed = stats.elapsed_s.get(kind, [])
            buckets = [
                (str(b) if b != float("inf") else "+Inf", float(sum(1 for e in elapsed if e <= b)))
                for b in DURATION_BUCKETS
            ]
            durations.add_metric([kind], buckets, sum_value=float(sum(elapsed)))
        workers.add_metric([], live)
        yield from (by_state, depth, workers, durations)


def make_registry(db: Database, worker_seen_s: float) -> tuple[CollectorRegistry, Histogram]:
    registry = CollectorRegistry()
    registry.register(JobCollector(db, worker_seen_s))
    latency = Histogram(
        "archscreen_request_duration_seconds",
        "API request latency by route template.",
        ["method", "route", "status"],
        registry=registry,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    )
    return registry, latency


@router.get("/metrics", response_class=Response, responses={401: {}, 404: {}})
def metrics(request: Request) -> Response:
    """Prometheus metrics (job counts of every tenant): on the API port unless
    ``ARCHSCREEN_METRICS_PORT`` moves them to a listener of their own; ``ARCHSCREEN_METRICS_TOKEN``
    makes this route ask for that bearer token."""
    settings = request.app.state.settings
    if settings.metrics_port is not None:
        raise HTTPException(404, f"metrics are served on port {settings.metrics_port}, not here")
    if settings.metrics_token:
        sent = request.headers.get("authorization", "")
        if not hmac.compare_digest(sent.encode(), f"Bearer {settings.metrics_token}".encode()):
            raise HTTPException(401, "metrics need the ARCHSCREEN_METRICS_TOKEN bearer token")
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)

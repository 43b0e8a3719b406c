"""The FastAPI application factory (``uvicorn --factory archscreen.api.app:create_app``)."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from archscreen import __version__
from archscreen.api import errors
from archscreen.api.deps import TokenCache
from archscreen.api.etag import ReadCache
from archscreen.api.guards import RequestGuards
from archscreen.api.routes import candidates, datasets, health, ranking, search, studies, summary
from archscreen.api.schemas import ErrorResponse, TooLargeResponse
from archscreen.settings import Settings
from archscreen.store import Database

API_PREFIX = "/api/v1"

# What any authenticated route may answer besides its own codes (declared, so clients and
# schema-driven tests know them).
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body is not parseable (e.g. not UTF-8 JSON)."},
    401: {"model": ErrorResponse, "description": "Missing, invalid or revoked API token."},
    413: {"model": TooLargeResponse, "description": "Body over ARCHSCREEN_MAX_BODY_BYTES, or a quota."},
    422: {"model": ErrorResponse, "description": "Invalid input; each item names the field path."},
    503: {
        "model": ErrorResponse,
        "description": "The database is unreachable; retry after the Retry-After header's seconds.",
        "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}},
    },
}


class RequestLatency:
    """Per-route latency histogram, as plain ASGI middleware (Starlette's BaseHTTPMiddleware costs
    a task and a stream per request: measurable on the polling path)."""

    def __init__(self, app: ASGIApp, histogram: Any) -> None:
        self.app, self.histogram = app, histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            template = getattr(scope.get("route"), "path", "unmatched")
            self.histogram.labels(scope["method"], template, str(status)).observe(time.perf_counter() - t0)


def _warm_imports() -> None:
    """Import the spec and dataset code (torch, scikit-learn) at start-up, before the port opens.

    The routes import them lazily (so ``import archscreen.api`` stays light); without this, the first
    study or candidate POST paid the import (10-17 s on a loaded 2-core box) and clients with a 5 s
    timeout gave up on it."""
    import archscreen.core.data
    import archscreen.core.spec  # noqa: F401


def create_app(settings: Settings | None = None, *, check_schema: bool = True) -> FastAPI:
    """Build the app; refuses to start (raises ``SchemaOutOfDate``) if the schema is not at head."""
    settings = settings or Settings()
    db = Database(
        settings.resolved_database_url,
        connect_timeout_s=settings.db_connect_timeout_s,
        pool_timeout_s=settings.db_pool_timeout_s,
        statement_timeout_s=settings.db_statement_timeout_s,
        io_timeout_s=settings.db_io_timeout_s,
    )
    if check_schema:
        db.check_schema()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(_warm_imports)  # before the port opens: no request waits on it
        yield
        db.dispose()

    app = FastAPI(
        title="archscreen",
        version=__version__,
        description="Screen neural-network architectures with one Alrao run each, then tune the best.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.db = db
    app.state.token_cache = TokenCache(settings.auth_cache_s)
    # ARCHSCREEN_READ_CACHE_BYTES=0 turns the full-read cache off (bench/api_load.py --reads does)
    app.state.read_cache = ReadCache(int(os.environ.get("ARCHSCREEN_READ_CACHE_BYTES", str(64 * 2**20))))
    registry, latency = health.make_registry(db, settings.worker_seen_s)
    app.state.metrics_registry = registry
    errors.install(app)

    app.add_middleware(RequestLatency, histogram=latency)
    app.add_middleware(
        RequestGuards,
        max_body_bytes=settings.max_body_bytes,
        limits_by_path={f"{API_PREFIX}/datasets": settings.max_dataset_bytes},
    )

    api = APIRouter(prefix=API_PREFIX, responses=COMMON_RESPONSES)
    api.include_router(studies.router)
    api.include_router(datasets.router)
    api.include_router(candidates.router)
    api.include_router(ranking.router)
    api.include_router(summary.router)
    api.include_router(search.router)
    app.include_router(api)
    app.include_router(health.router)
    _mount_dashboard(app)
    return app


DASHBOARD = Path(__file__).resolve().parent / "dashboard"
# Everything the dashboard loads comes from this server; inline style attributes size the progress bars.
DASHBOARD_CSP = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"
)


def _mount_dashboard(app: FastAPI) -> None:
    """The built-in dashboard at ``/`` (static files shipped in the package, no CDN)."""
    app.mount("/dashboard", StaticFiles(directory=DASHBOARD), name="dashboard")

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(
            DASHBOARD / "index.html",
            headers={"Content-Security-Policy": DASHBOARD_CSP, "Cache-Control": "no-cache"},
        )

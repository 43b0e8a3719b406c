"""Every error is JSON: ``{"detail": "..."}`` or ``{"detail": [{"loc", "path", "msg", "type"}]}``.

Validation errors name the field path (``body.spec.layers[0].conv1d.kernel``); an
unexpected error is a 500 with a request id, never a traceback.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("archscreen.api")


def path_of(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def loc_of(path: str) -> list[str | int]:
    """``layers[0].conv1d.kernel`` → ``["layers", 0, "conv1d", "kernel"]``."""
    loc: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        loc.append(int(index) if index else name)
    return loc


def item(loc: Sequence[str | int], msg: str, type_: str = "value_error") -> dict[str, Any]:
    return {"loc": list(loc), "path": path_of(loc), "msg": msg, "type": type_}


class ApiValidationError(Exception):
    """A 422 raised by a route after pydantic (e.g. shape inference of a spec)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        super().__init__(items)
        self.items = items


# An error body stays small whatever the input: a few dozen items of a few hundred characters.
MAX_ERROR_ITEMS = 50
MAX_MESSAGE_CHARS = 300


def _short(text: str) -> str:
    text = " ".join(text.split())  # one line
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def capped(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most ``MAX_ERROR_ITEMS`` items, each with a one-line message and path of bounded length."""
    out = [
        {**i, "msg": _short(str(i.get("msg", ""))), "path": _short(str(i.get("path", "")))}
        for i in items[:MAX_ERROR_ITEMS]
    ]
    if len(items) > MAX_ERROR_ITEMS:
        out.append(item([], f"... and {len(items) - MAX_ERROR_ITEMS} more problems", "too_many_errors"))
    return out


# Seconds a client should wait before retrying while the database is unreachable.
RETRY_AFTER_S = 5


def database_unavailable(exc: BaseException) -> bool:
    """True for a lost or refused database connection (not for a bad query or a constraint)."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.TimeoutError):  # the pool's checkout timeout
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        return isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) and not _sqlite_busy(exc)
    return False


def _sqlite_busy(exc: BaseException) -> bool:
    return "database is locked" in str(exc)


def unavailable_response() -> JSONResponse:
    return JSONResponse(
        {"detail": "database unavailable; retry later"},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def install(app: FastAPI) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from archscreen.api.limits import LimitExceeded

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        items = []
        for e in exc.errors():
            loc = [p for p in e.get("loc", ()) if isinstance(p, str | int)]
            # pydantic adds union-member tags (e.g. 'list[CandidateCreate]') to loc: keep field names only
            loc = [p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
            items.append(item(loc, str(e.get("msg", "invalid")), str(e.get("type", "value_error"))))
            if len(items) > MAX_ERROR_ITEMS:
                break
        return JSONResponse({"detail": capped(items)}, status_code=422)

    @app.exception_handler(ApiValidationError)
    async def _api_validation(request: Request, exc: ApiValidationError) -> JSONResponse:
        return JSONResponse({"detail": capped(exc.items)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 413:
            limit = request.app.state.settings.max_body_bytes
            return JSONResponse(
                {
                    "detail": f"request body is larger than {limit:,} bytes (ARCHSCREEN_MAX_BODY_BYTES)",
                    "limit_bytes": limit,
                },
                status_code=413,
                # the client may still be sending: do not read its rest as the next request
                headers={"Connection": "close"},
            )
        detail = exc.detail if not isinstance(exc.detail, str) else _short(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette lists the methods of the first route matching the path only; a path served
            # by several routes (GET and POST /studies) allows all of theirs
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(LimitExceeded)
    async def _limit(request: Request, exc: LimitExceeded) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after_s)} if exc.status == 429 else None
        return JSONResponse(
            {"detail": exc.detail, "limit": exc.limit, "current": exc.current},
            status_code=exc.status,
            headers=headers,
        )

    @app.exception_handler(SQLAlchemyError)
    async def _database(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        if database_unavailable(exc):
            log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
            return unavailable_response()
        return _internal_error(request, exc)

    @app.exception_handler(RecursionError)
    async def _recursion(request: Request, exc: RecursionError) -> JSONResponse:
        return JSONResponse({"detail": [item(["body"], "nested too deeply")]}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return _internal_error(request, exc)


def _allowed_methods(request: Request) -> list[str]:
    from starlette.routing import Match

    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "GET"})
        route_methods = getattr(route, "methods", None)
        if match != Match.NONE and route_methods:  # a mount has no methods of its own
            methods |= set(route_methods)
    return sorted(methods)


def _internal_error(request: Request, exc: BaseException) -> JSONResponse:
    request_id = uuid.uuid4().hex[:12]
    log.error(
        "unhandled error (request %s) on %s %s",
        request_id,
        request.method,
        request.url.path,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return JSONResponse(
        {"detail": f"internal error (request id {request_id}); the server log has the details"},
        status_code=500,
        # the server closes the connection after an unhandled error: say so, so the client
        # opens a new one instead of failing its next request with a reset
        headers={"Connection": "close"},
    )

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


def install(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        items = []
        for e in exc.errors():
            loc = [p for p in e.get("loc", ()) if isinstance(p, str | int)]
            # pydantic adds union-member tags (e.g. 'list[CandidateCreate]') to loc: keep field names only
            loc = [p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
            items.append(item(loc, str(e.get("msg", "invalid")), str(e.get("type", "value_error"))))
        return JSONResponse({"detail": items}, status_code=422)

    @app.exception_handler(ApiValidationError)
    async def _api_validation(request: Request, exc: ApiValidationError) -> JSONResponse:
        return JSONResponse({"detail": exc.items}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = uuid.uuid4().hex[:12]
        log.exception("unhandled error (request %s) on %s %s", request_id, request.method, request.url.path)
        return JSONResponse(
            {"detail": f"internal error (request id {request_id}); the server log has the details"},
            status_code=500,
        )

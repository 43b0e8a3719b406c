"""An ASGI guard that runs before any route: NUL bytes in the URL and oversized bodies.

It answers in the API's error format (``{"detail": ...}``) before a route runs, so a ``%00`` in a
query never reaches the database driver (PostgreSQL refuses NUL in text with a driver error,
which would be a 500), and a 40 MB body is refused before it is read.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


async def _send_json(send: Send, status: int, body: object, headers: list[tuple[bytes, bytes]]) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` once a streamed body passes the limit. An ``HTTPException``, so
    FastAPI's body reader re-raises it as is (it turns other errors into a 400)."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail="request body too large")


def too_large_body(limit: int, setting: str = "ARCHSCREEN_MAX_BODY_BYTES") -> dict[str, object]:
    return {
        "detail": f"request body is larger than {limit:,} bytes ({setting})",
        "limit_bytes": limit,
    }


class RequestGuards:
    """Before any route: a NUL character in the path or query string is a 422 naming the
    parameter, and a declared ``Content-Length`` over ``max_body_bytes`` is a 413 naming the limit,
    sent before a byte of the body is read; a chunked body is cut off once it passes the limit.

    Not FastAPI's ``max_body_size``: its middleware replaces any response to an over-long
    request with a plain-text 413, and every error here is JSON.
    """

    def __init__(
        self, app: ASGIApp, max_body_bytes: int, limits_by_path: dict[str, int] | None = None
    ) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes
        # routes that stream their body to disk themselves (dataset uploads) and own their limit
        self.limits_by_path = limits_by_path or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nul = _nul_parameter(scope)
        if nul is not None:
            loc = ["query", nul] if nul != "path" else ["path"]
            error = {"loc": loc, "path": ".".join(loc), "msg": "must not contain a NUL character"}
            await _send_json(send, 422, {"detail": [{**error, "type": "value_error"}]}, [])
            return
        if scope.get("path") in self.limits_by_path:
            limit = self.limits_by_path[scope["path"]]
            declared = _content_length(scope)
            if declared is not None and declared > limit:
                body = too_large_body(limit, "ARCHSCREEN_MAX_DATASET_BYTES")
                await _send_json(send, 413, body, [(b"connection", b"close")])
                return
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            # the client may still be sending: close, so the unread rest is not taken for a request
            await _send_json(send, 413, too_large_body(self.max_body_bytes), [(b"connection", b"close")])
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            # normally answered by the app's HTTPException handler; this covers a raise outside it
            if started:
                raise
            await _send_json(send, 413, too_large_body(self.max_body_bytes), [(b"connection", b"close")])


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _nul_parameter(scope: Scope) -> str | None:
    """The name of the first query parameter holding a NUL (``path`` for the path itself)."""
    if "\x00" in scope.get("path", ""):
        return "path"
    query = scope.get("query_string", b"")
    if b"%00" not in query.lower() and b"\x00" not in query:
        return None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if "\x00" in value or "\x00" in name:
            return name.replace("\x00", "") or "query"
    return None

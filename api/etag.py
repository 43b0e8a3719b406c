"""Cheap polling: weak ETags from the study's version counter, ``304 Not Modified`` on a match.

Every change under a study (a job's state, an epoch's metrics, a new candidate, a
promotion) bumps ``studies.version`` in the same transaction, so a poller that
sends ``If-None-Match`` gets a 304 after one indexed lookup, without reading any
training state.
"""

from __future__ import annotations

from fastapi import HTTPException, Request, Response, status


def make_etag(kind: str, resource_id: int, version: int, *extra: object) -> str:
    tail = "-".join(str(e) for e in extra)
    return f'W/"{kind}{resource_id}-v{version}{"-" + tail if tail else ""}"'


def not_modified(request: Request, etag: str) -> Response | None:
    """A 304 response if the client already holds ``etag``."""
    sent = request.headers.get("if-none-match")
    if sent and (sent.strip() == "*" or etag in [t.strip() for t in sent.split(",")]):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    return None


def require(found: tuple[int, int] | None, what: str, resource_id: int) -> tuple[int, int]:
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{what} {resource_id} not found")
    return found

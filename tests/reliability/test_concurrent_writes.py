"""Concurrent POSTs through a real ``archscreen api`` (its thread pool runs them at once) on both
backends: per-tenant limits are never exceeded, and one ``Idempotency-Key`` never creates two
candidates (a replay for the same body, a 409 for another)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services import BACKENDS, RunningService, service_backend

pytestmark = pytest.mark.slow


def spec(width: int) -> dict[str, Any]:
    return {"spec": {"layers": ["flatten", {"linear": width}, "relu"], "head": "classifier"}}


@pytest.fixture(params=BACKENDS)
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningService]:
    for svc in service_backend(request, tmp_path):
        # no worker runs: every job stays queued, so each counts towards the active-job limit
        svc.env.update(ARCHSCREEN_MAX_CANDIDATES_PER_STUDY="5", ARCHSCREEN_MAX_ACTIVE_JOBS_PER_TENANT="7")
        svc.start_api()
        svc.wait_healthy()
        yield svc


def at_once(
    svc: RunningService, token: str, posts: list[tuple[str, Any, dict[str, str]]]
) -> list[httpx.Response]:
    """Send the POSTs together: each thread waits at a barrier, then sends on its own connection."""
    barrier = threading.Barrier(len(posts))

    def post(path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
        with httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            c.get("/healthz")  # connected before the barrier
            barrier.wait()
            return c.post(path, json=body, headers=headers)

    with ThreadPoolExecutor(len(posts)) as pool:
        return list(pool.map(lambda p: post(*p), posts))


def new_study(svc: RunningService, token: str, name: str) -> int:
    r = httpx.post(
        f"{svc.url}/api/v1/studies",
        json={"name": name, "dataset": "mnist1d"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def candidates_of(svc: RunningService, token: str, study_id: int) -> int:
    r = httpx.get(
        f"{svc.url}/api/v1/studies/{study_id}/candidates",
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    return int(r.json()["count"])


def test_concurrent_posts_never_exceed_a_limit_nor_reuse_a_key(service: RunningService) -> None:
    """Both in one API start, to keep the test cheap (each start migrates a fresh database)."""
    a, b = new_study(service, service.token, "a"), new_study(service, service.token, "b")
    # eight single-candidate POSTs to one study of at most 5 candidates (the job limit, 7, has room)
    codes = Counter(
        r.status_code
        for r in at_once(
            service, service.token, [(f"/api/v1/studies/{a}/candidates", spec(10 + i), {}) for i in range(8)]
        )
    )
    assert codes == {201: 5, 413: 3}, codes
    assert candidates_of(service, service.token, a) == 5
    # eight more to another study: 5 jobs are queued, so the tenant's limit of 7 leaves room for 2
    codes = Counter(
        r.status_code
        for r in at_once(
            service, service.token, [(f"/api/v1/studies/{b}/candidates", spec(20 + i), {}) for i in range(8)]
        )
    )
    assert codes == {201: 2, 429: 6}, codes
    assert candidates_of(service, service.token, b) == 2

    # one Idempotency-Key (another tenant, so no limit is in the way)
    token = service.cli("token", "create", "--tenant", "keys").stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
    sid = new_study(service, token, "keys")
    path = f"/api/v1/studies/{sid}/candidates"
    # six bodies, one key: one is created, the other five are told the key was used (409)
    answers = at_once(service, token, [(path, spec(30 + i), {"Idempotency-Key": "k1"}) for i in range(6)])
    assert Counter(r.status_code for r in answers) == {201: 1, 409: 5}, [r.text for r in answers]
    assert candidates_of(service, token, sid) == 1
    # one body six times, one key: one is created and five replay its response
    answers = at_once(service, token, [(path, spec(40), {"Idempotency-Key": "k2"}) for _ in range(6)])
    assert [r.status_code for r in answers] == [201] * 6, [r.text for r in answers]
    assert len({r.text for r in answers}) == 1, "every answer is the first response, replayed"
    assert candidates_of(service, token, sid) == 2

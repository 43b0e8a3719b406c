"""A hung PostgreSQL: connections stay open and no byte flows (a frozen loopback proxy between a
real ``archscreen api`` and the database). Every route answers 503 with ``Retry-After`` within
10 s, no database call blocks the event loop (``/healthz`` stays prompt throughout, an upload
included), and the API serves again once the database does."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.reliability.tcp_proxy import TcpProxy
from tests.services import RunningService

pytestmark = pytest.mark.slow
SPEC = {"layers": ["flatten", {"linear": 4}, "relu"], "head": "classifier"}


def test_a_hung_database_is_a_503_within_seconds_and_healthz_stays_prompt(
    api_through_proxy: tuple[RunningService, TcpProxy],
) -> None:
    svc, proxy = api_through_proxy
    auth = {"Authorization": f"Bearer {svc.token}"}
    # the first study imports the dataset registry (torch): seconds on a loaded host
    r = httpx.post(
        f"{svc.url}/api/v1/studies", json={"name": "kept", "dataset": "mnist1d"}, headers=auth, timeout=60
    )
    assert r.status_code == 201, r.text
    study_id = r.json()["id"]
    # the token is cached now, so each request below meets the database in its route
    summary = httpx.get(f"{svc.url}/api/v1/studies/{study_id}/summary", headers=auth, timeout=60)
    assert summary.status_code == 200, summary.text

    proxy.freeze()
    requests = [
        ("GET", "/api/v1/studies", None),
        ("GET", "/readyz", None),
        ("GET", f"/api/v1/studies/{study_id}/summary", None),  # an async route
        ("GET", f"/api/v1/studies/{study_id}/ranking", None),
        ("POST", "/api/v1/datasets?name=d.npz", b"not read before the quota check"),  # async upload
        ("POST", f"/api/v1/studies/{study_id}/candidates", {"spec": SPEC}),
    ]
    answers: dict[str, tuple[int, float, str]] = {}

    def call(method: str, path: str, body: object) -> None:
        t0 = time.monotonic()
        kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
        try:
            r = httpx.request(method, f"{svc.url}{path}", headers=auth, timeout=60, **kwargs)
            answers[path] = (r.status_code, time.monotonic() - t0, r.headers.get("Retry-After", ""))
        except httpx.HTTPError as exc:
            answers[path] = (0, time.monotonic() - t0, repr(exc))

    threads = [threading.Thread(target=call, args=req) for req in requests]
    for t in threads:
        t.start()
    # poll /healthz while the requests above wait on the hung database
    slowest_health = 0.0
    while any(t.is_alive() for t in threads):
        t0 = time.monotonic()
        assert httpx.get(f"{svc.url}/healthz", timeout=30).status_code == 200
        slowest_health = max(slowest_health, time.monotonic() - t0)
        time.sleep(0.1)
    for t in threads:
        t.join()

    for method, path, _ in requests:
        code, seconds, retry_after = answers[path]
        assert code == 503, (method, path, answers[path])
        assert seconds < 10.0, f"{method} {path}: 503 after {seconds:.1f} s"
        if path != "/readyz":
            assert retry_after.isdigit(), (path, retry_after)
    assert slowest_health < 2.0, f"/healthz waited {slowest_health:.2f} s while the database hung"

    proxy.thaw()
    deadline = time.monotonic() + 20
    while True:
        r = httpx.get(f"{svc.url}/api/v1/studies", headers=auth, timeout=30)
        if r.status_code == 200:
            break
        assert r.status_code == 503 and time.monotonic() < deadline, r.text
        time.sleep(0.5)
    assert [s["name"] for s in r.json()["data"]] == ["kept"]
    assert "Traceback" not in (svc.tmp / "api.log").read_text(), "a hung database is a warning, not a crash"

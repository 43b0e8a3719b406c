"""A PostgreSQL outage, made by cutting a loopback TCP proxy between a real ``archscreen api``
and the database: every route answers 503 with ``Retry-After`` within seconds (never a 500 or a
hang), and the API recovers by itself when the database comes back, with nothing lost."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.reliability.tcp_proxy import TcpProxy
from tests.services import RunningService


def test_database_outage_is_a_fast_503_and_the_api_recovers(
    api_through_proxy: tuple[RunningService, TcpProxy],
) -> None:
    svc, proxy = api_through_proxy
    auth = {"Authorization": f"Bearer {svc.token}"}
    r = httpx.post(f"{svc.url}/api/v1/studies", json={"name": "kept", "dataset": "mnist1d"}, headers=auth)
    assert r.status_code == 201, r.text

    proxy.cut()
    requests = [
        ("GET", "/api/v1/studies", auth, None),
        ("POST", "/api/v1/studies", auth, {"name": "during", "dataset": "mnist1d"}),
        ("GET", "/api/v1/studies", {"Authorization": "Bearer as_not-a-token"}, None),
        ("GET", "/api/v1/studies/1/ranking", auth, None),
    ]
    for method, path, headers, body in requests:
        t0 = time.monotonic()
        r = httpx.request(method, f"{svc.url}{path}", headers=headers, json=body, timeout=30)
        seconds = time.monotonic() - t0
        assert r.status_code == 503, (method, path, r.status_code, r.text)
        assert r.headers["Retry-After"].isdigit() and "database" in r.json()["detail"]
        assert seconds < 4.0, f"{method} {path}: 503 after {seconds:.1f} s"
    assert httpx.get(f"{svc.url}/readyz", timeout=30).status_code == 503

    proxy.restore()
    deadline = time.monotonic() + 20
    while True:
        r = httpx.get(f"{svc.url}/api/v1/studies", headers=auth, timeout=30)
        if r.status_code == 200:
            break
        assert r.status_code == 503 and time.monotonic() < deadline, r.text
        time.sleep(0.5)
    assert [s["name"] for s in r.json()["data"]] == ["kept"], (
        "nothing written during the outage, nothing lost"
    )
    assert "Traceback" not in (svc.tmp / "api.log").read_text(), "a database outage is a warning, not a crash"


def test_typed_client_rides_out_a_short_outage_on_idempotent_requests(
    api_through_proxy: tuple[RunningService, TcpProxy],
) -> None:
    from archscreen.client import ApiError, Client

    svc, proxy = api_through_proxy
    with Client(svc.url, svc.token, retries=4, backoff_s=0.2) as client:
        client.create_study("kept", dataset="mnist1d")
        proxy.cut()
        # a POST without an Idempotency-Key is not retried: the caller sees the 503 at once
        with pytest.raises(ApiError) as refused:
            client.create_study("during", dataset="mnist1d")
        assert refused.value.status == 503
        restore = threading.Timer(1.5, proxy.restore)
        restore.start()
        try:
            t0 = time.monotonic()
            names = [s.name for s in client.studies().data]  # GET: retried until the database is back
            waited = time.monotonic() - t0
        finally:
            restore.join()
    assert names == ["kept"]
    assert waited >= 1.0, "the first tries must have met the outage"

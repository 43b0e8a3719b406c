"""/metrics is configurable: on the API port (optionally behind a bearer token) or on a listener of
its own that the public port does not serve."""

from __future__ import annotations

from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from archscreen.api.app import create_app
from archscreen.settings import Settings
from archscreen.store import Database
from tests.services import RunningService, free_port


def test_metrics_token_guards_the_api_port_route(migrated: Database, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d", database_url=migrated.url, metrics_token="scrape-me")
    with TestClient(create_app(settings)) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        r = client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert r.status_code == 200 and "archscreen_jobs" in r.text


def test_metrics_port_moves_metrics_off_the_api_port(tmp_path: Path) -> None:
    metrics_port = free_port()
    svc = RunningService(
        tmp_path, f"sqlite:///{tmp_path / 'data' / 'archscreen.db'}", None, metrics_port=str(metrics_port)
    )
    svc.cli("migrate")
    svc.start_api()
    try:
        svc.wait_healthy()
        public = httpx.get(f"{svc.url}/metrics")
        assert public.status_code == 404 and str(metrics_port) in public.json()["detail"]
        private = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert private.status_code == 200 and "archscreen_jobs" in private.text
    finally:
        svc.stop()

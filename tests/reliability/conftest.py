"""Fixtures shared by the reliability tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.tcp_proxy import TcpProxy
from tests.services import RunningService, fresh_postgres_url, need


@pytest.fixture
def api_through_proxy(tmp_path: Path) -> Iterator[tuple[RunningService, TcpProxy]]:
    """A real ``archscreen api`` on a fresh PostgreSQL database reached through a loopback
    :class:`TcpProxy` the test can cut (an outage) or freeze (a hung server); migrated, with a
    token in ``svc.token``. The proxy flows again before the API stops, so the API shuts down
    without waiting on a frozen connection."""
    need("PostgreSQL", "127.0.0.1", 5432)
    gen = fresh_postgres_url()
    url = next(gen)
    proxy = TcpProxy(("127.0.0.1", 5432)).start()
    svc = RunningService(tmp_path, url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"), None)
    try:
        svc.cli("migrate")
        svc.token = svc.cli("token", "create", "--tenant", "proxy").stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
        svc.start_api()
        svc.wait_healthy()
        yield svc, proxy
    finally:
        proxy.thaw()
        svc.stop()
        proxy.close()
        with contextlib.suppress(StopIteration):
            next(gen)

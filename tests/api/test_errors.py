"""The error envelope: an unexpected error is a JSON 500 that closes the connection, and error
bodies stay small whatever the input."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from archscreen.api.app import create_app
from archscreen.api.errors import MAX_ERROR_ITEMS, ApiValidationError, capped, item
from archscreen.settings import Settings
from archscreen.store import Database


def test_a_500_is_json_with_a_request_id_and_closes_the_connection(
    migrated: Database, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=migrated.url)
    app = create_app(settings)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("/srv/secret/path.py exploded")

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom")
    assert r.status_code == 500
    assert r.headers["connection"] == "close"
    assert "request id" in r.json()["detail"] and "/srv/secret" not in r.text


def test_error_bodies_are_capped_in_items_and_message_length() -> None:
    items = [item(["body", i], "x" * 10_000) for i in range(1000)]
    out = capped(items)
    assert len(out) == MAX_ERROR_ITEMS + 1 and "950 more" in out[-1]["msg"]
    assert all(len(i["msg"]) <= 300 for i in out)
    assert "\n" not in capped([item(["body"], "two\nlines")])[0]["msg"]
    assert isinstance(ApiValidationError(items).items, list)

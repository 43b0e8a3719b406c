"""Cheap polling: ETag / 304 on study, candidate and tuning-job reads, ?since=, the summary, SSE."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import fastapi.routing
import httpx
import pytest
from fastapi.testclient import TestClient

from archscreen.api.app import create_app
from archscreen.api.routes import summary as summary_route
from archscreen.api.schemas import CandidateRow
from archscreen.settings import Settings
from archscreen.store import Database, Job
from archscreen.store import jobs as job_store
from archscreen.store.auth import create_token

MLP = {"name": "mlp", "layers": ["flatten", {"linear": 16}, "relu"], "head": "classifier"}
EPOCH = dict(
    max_epochs=5, elapsed_s=1.0, train_loss=2.0, val_loss=1.5, val_accuracy=0.4, seconds=0.5, extra={}
)


@pytest.fixture
def env(database_url: str, tmp_path: Path, migrated: Database):  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    settings.ensure_dirs()
    with migrated.session() as s:
        auth = {"Authorization": f"Bearer {create_token(s, 'acme')}"}
    with TestClient(create_app(settings)) as client:
        study = client.post("/api/v1/studies", headers=auth, json={"name": "p", "dataset": "mnist1d"}).json()
        cand = client.post(
            f"/api/v1/studies/{study['id']}/candidates", headers=auth, json={"spec": MLP}
        ).json()
        yield client, auth, migrated, study["id"], cand["data"][0]["id"]


def job_of(db: Database, candidate_id: int) -> int:
    with db.session() as s:
        return s.query(Job).filter_by(candidate_id=candidate_id).one().id


def test_etag_304_until_something_changes(env) -> None:  # type: ignore[no-untyped-def]
    client, auth, db, sid, cid = env
    for url in (f"/api/v1/studies/{sid}", f"/api/v1/candidates/{cid}", f"/api/v1/studies/{sid}/summary"):
        first = client.get(url, headers=auth)
        etag = first.headers["ETag"]
        assert first.status_code == 200 and etag.startswith('W/"')
        again = client.get(url, headers={**auth, "If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["ETag"] == etag
        assert client.get(url, headers={**auth, "If-None-Match": 'W/"other"'}).status_code == 200
    etags = {
        u: client.get(u, headers=auth).headers["ETag"]
        for u in (f"/api/v1/studies/{sid}", f"/api/v1/candidates/{cid}")
    }
    job_id = job_of(db, cid)
    with db.session() as s:
        job_store.claim(s, job_id, "w", 30)
    with db.session() as s:
        job_store.record_epoch(s, job_id, "w", epoch=1, **EPOCH)  # type: ignore[arg-type]
    for url, etag in etags.items():
        changed = client.get(url, headers={**auth, "If-None-Match": etag})
        assert changed.status_code == 200 and changed.headers["ETag"] != etag
    with db.session() as s:  # a heartbeat alone changes nothing a poller sees
        job_store.heartbeat(s, job_id, "w", 30)
    now = client.get(f"/api/v1/candidates/{cid}", headers=auth)
    assert (
        client.get(
            f"/api/v1/candidates/{cid}", headers={**auth, "If-None-Match": now.headers["ETag"]}
        ).status_code
        == 304
    )
    # another tenant cannot probe versions
    with db.session() as s:
        other = {"Authorization": f"Bearer {create_token(s, 'globex')}"}
    assert client.get(f"/api/v1/candidates/{cid}", headers={**other, "If-None-Match": "*"}).status_code == 404


def test_since_returns_only_newer_points_and_summary_has_everything(env) -> None:  # type: ignore[no-untyped-def]
    client, auth, db, sid, cid = env
    job_id = job_of(db, cid)
    with db.session() as s:
        job_store.claim(s, job_id, "w", 30)
    for epoch in (1, 2, 3):
        with db.session() as s:
            job_store.record_epoch(s, job_id, "w", epoch=epoch, **EPOCH)  # type: ignore[arg-type]
    full = client.get(f"/api/v1/candidates/{cid}", headers=auth).json()["runs"][0]["curves"]
    newer = client.get(f"/api/v1/candidates/{cid}?since=2", headers=auth).json()["runs"][0]["curves"]
    assert [p["epoch"] for p in full] == [1, 2, 3] and [p["epoch"] for p in newer] == [3]
    summary = client.get(f"/api/v1/studies/{sid}/summary", headers=auth).json()
    assert summary["candidate_states"] == {"running": 1}
    row = summary["candidates"][0]
    assert (
        row["progress"]["epoch"] == 3 and row["progress"]["max_epochs"] == 5 and row["progress"]["eta_s"] > 0
    )
    assert summary["ranking"]["count"] == 0 and summary["ranking"]["unranked"][0]["state"] == "running"
    assert summary["study"]["id"] == sid and summary["tuning_jobs"] == []


def sse_messages(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """The stream's messages as field -> value (``data`` lines joined); a comment as ``{":": text}``."""
    fields: dict[str, str] = {}
    for line in lines:
        if line == "":
            if fields:
                yield fields
            fields = {}
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "":
            fields[":"] = value
        else:
            fields[name] = f"{fields[name]}\n{value}" if name in fields else value


@pytest.mark.timeout(60)
def test_events_stream_sends_the_summary_and_an_event_after_each_change(env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    client, auth, db, sid, cid = env
    monkeypatch.setattr(summary_route, "EVENT_POLL_S", 0.05)
    with client.stream("GET", f"/api/v1/studies/{sid}/events", headers=auth) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        messages = sse_messages(r.iter_lines())
        assert next(messages) == {"retry": "2000"}
        first = next(messages)
        body = json.loads(first["data"])
        assert first["event"] == "summary" and int(first["id"]) == body["version"]
        assert body["study"]["id"] == sid and body["candidates"][0]["state"] == "queued"
        job_id = job_of(db, cid)
        with db.session() as s:
            job_store.claim(s, job_id, "w", 30)
        with db.session() as s:
            job_store.record_epoch(s, job_id, "w", epoch=1, **EPOCH)  # type: ignore[arg-type]
        # the next summary shows the change (the claim alone may come first, as its own event)
        for message in messages:
            assert message["event"] == "summary" and int(message["id"]) > int(first["id"])
            row = json.loads(message["data"])["candidates"][0]
            if row["progress"]["epoch"] == 1:
                assert row["state"] == "running" and json.loads(message["data"])["version"] == int(
                    message["id"]
                )
                break
    assert client.get(f"/api/v1/studies/{sid}/events").status_code == 401
    assert client.get("/api/v1/studies/999/events", headers=auth).status_code == 404


@pytest.mark.timeout(60)
def test_events_stream_pings_while_nothing_changes(env, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    client, auth, _db, sid, _cid = env
    monkeypatch.setattr(summary_route, "EVENT_POLL_S", 0.05)
    monkeypatch.setattr(fastapi.routing, "_PING_INTERVAL", 0.3)  # FastAPI's keep-alive (15 s by default)
    with client.stream("GET", f"/api/v1/studies/{sid}/events", headers=auth) as r:
        messages = sse_messages(r.iter_lines())
        assert next(messages) == {"retry": "2000"}
        # (a ping may come first if the summary takes longer than the interval to build)
        assert next(m for m in messages if ":" not in m)["event"] == "summary"
        t0 = time.monotonic()
        pings = [next(messages), next(messages)]  # nothing changes: only keep-alive comments
        assert pings == [{":": "ping"}, {":": "ping"}]
        assert time.monotonic() - t0 >= 0.5


def test_events_route_documents_a_stream_and_json_errors(env) -> None:  # type: ignore[no-untyped-def]
    client = env[0]
    responses = client.app.openapi()["paths"]["/api/v1/studies/{study_id}/events"]["get"]["responses"]
    assert list(responses["200"]["content"]) == ["text/event-stream"]
    for code in ("401", "404", "503"):
        assert list(responses[code]["content"]) == ["application/json"], code


def test_client_wait_and_cli_progress_poll_only_the_etagged_summary(env, capsys) -> None:  # type: ignore[no-untyped-def]
    from archscreen.client import Client
    from archscreen.remote_cli import ProgressReporter

    client, auth, db, sid, cid = env
    seen: list[tuple[str, str | None, int]] = []
    job_id = job_of(db, cid)

    def record(r: httpx.Response) -> None:
        seen.append((r.request.url.path, r.request.headers.get("if-none-match"), r.status_code))
        if len(seen) == 3:  # two polls saw the study as it was: now the run trains and ends
            with db.session() as s:
                job_store.claim(s, job_id, "w", 30)
            with db.session() as s:
                job_store.finish(s, job_id, "w", "succeeded", result={"val_loss": 0.5, "preferred_lr": 0.1})

    c = Client("http://testserver", "unused")
    c._http = TestClient(client.app, headers=auth)  # the app in process, through the real client
    c._http.event_hooks = {"response": [record]}
    updates: list[list[str]] = []
    with ProgressReporter(enabled=True) as rep:

        def on_update(rows: list[CandidateRow]) -> None:
            updates.append([row.state for row in rows])
            rep.update(rows)

        done = c.wait(sid, timeout=30, poll_s=0.01, on_update=on_update)
    assert [(d.id, d.state) for d in done] == [(cid, "succeeded")]
    assert updates == [["queued"], ["succeeded"]]  # called when something changed, not every poll
    summary = f"/api/v1/studies/{sid}/summary"
    assert [(path, status) for path, _, status in seen] == [
        (summary, 200),
        (summary, 304),
        (summary, 304),
        (summary, 200),
    ]
    assert seen[0][1] is None and seen[1][1] == seen[2][1] == seen[3][1] is not None
    err = capsys.readouterr().err
    assert "mlp: queued" in err and "mlp: succeeded" in err


def test_a_cached_full_read_is_never_stale_nor_another_tenants(env) -> None:  # type: ignore[no-untyped-def]
    """The read cache is keyed by the ETag (the study's version): a change shows at once, the
    served body is the one a cold build gives, and a tenant never gets another's entry."""
    client, auth, db, sid, cid = env
    cache = client.app.state.read_cache  # type: ignore[attr-defined]
    urls = (f"/api/v1/candidates/{cid}", f"/api/v1/studies/{sid}/summary")
    first = {u: client.get(u, headers=auth) for u in urls}
    assert all(r.status_code == 200 for r in first.values())
    assert all(cache.get(1, r.headers["ETag"]) == r.content for r in first.values())  # tenant 1: acme
    again = {u: client.get(u, headers=auth) for u in urls}  # served from the cache
    assert {u: r.content for u, r in again.items()} == {u: r.content for u, r in first.items()}
    cache.max_bytes = 0  # a cold build of the same version gives the same body
    assert {u: client.get(u, headers=auth).content for u in urls} == {u: r.content for u, r in first.items()}
    cache.max_bytes = 64 * 2**20
    job_id = job_of(db, cid)  # a change under the study: every cached body is now behind
    with db.session() as s:
        assert job_store.claim(s, job_id, "w", 30) is not None
    with db.session() as s:
        assert job_store.record_epoch(s, job_id, "w", epoch=1, **EPOCH)
    after = {u: client.get(u, headers=auth) for u in urls}
    for u in urls:
        assert after[u].headers["ETag"] != first[u].headers["ETag"] and after[u].content != first[u].content
    assert after[urls[0]].json()["runs"][0]["curves"][0]["val_loss"] == 1.5
    with db.session() as s:
        other = {"Authorization": f"Bearer {create_token(s, 'other')}"}
    assert all(client.get(u, headers=other).status_code == 404 for u in urls)

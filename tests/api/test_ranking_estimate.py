"""The extrapolated estimate over the API: /candidates/{id}, /summary and /ranking show it with its
interval (null for results stored before estimates), and ``?metric=estimate`` ranks by it.

Results are written through the store's life cycle (claim → finish), as a worker would, on SQLite
and PostgreSQL (``database_url``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from archscreen import remote_cli
from archscreen.api.app import create_app
from archscreen.cli import build_parser
from archscreen.client import Client
from archscreen.settings import Settings
from archscreen.store import Database, Job
from archscreen.store import jobs as job_store
from archscreen.store.auth import create_token


@pytest.fixture
def env(database_url: str, tmp_path: Path, migrated: Database):  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    settings.ensure_dirs()
    with migrated.session() as s:
        auth = {"Authorization": f"Bearer {create_token(s, 'acme')}"}
    with TestClient(create_app(settings)) as client:
        yield client, auth, migrated


def finish(
    db: Database, cid: int, seed: int, val_loss: float, est: tuple[float, float, float] | None
) -> None:
    with db.session() as s:
        job = s.query(Job).filter_by(candidate_id=cid, kind="screen", seed=seed).one()
        job_store.claim(s, job.id, "w", 30)
    result: dict[str, Any] = {"task": "classification", "val_loss": val_loss, "val_accuracy": 1 - val_loss}
    if est is not None:
        result["estimate"] = {"value": est[0], "low": est[1], "high": est[2], "method": "exp-saturation"}
    with db.session() as s:
        assert job_store.finish(s, job.id, "w", "succeeded", result=result)


def study_with_estimates(client: TestClient, auth: dict[str, str], db: Database) -> tuple[int, list[int]]:
    """Study ``e``: candidates a, b, c with estimates on both seeds, and ``old`` stored without one."""
    sid = client.post(
        "/api/v1/studies",
        headers=auth,
        json={"name": "e", "dataset": "mnist1d", "screening": {"seeds": [0, 1], "max_epochs": 2}},
    ).json()["id"]
    specs = [
        {"name": f"m{w}", "layers": ["flatten", {"linear": w}, "relu"], "head": "classifier"}
        for w in (8, 16, 24, 32)
    ]
    a, b, c, old = (
        x["id"]
        for x in client.post(
            f"/api/v1/studies/{sid}/candidates", headers=auth, json=[{"spec": s} for s in specs]
        ).json()["data"]
    )
    # a: best by val_loss, worst by estimate; b and c's intervals overlap; old: stored before estimates
    for seed, (ea, eb, ec) in enumerate(
        [
            ((0.70, 0.68, 0.72), (0.90, 0.85, 0.93), (0.86, 0.80, 0.88)),
            ((0.72, 0.70, 0.74), (0.92, 0.89, 0.95), (0.88, 0.84, 0.90)),
        ]
    ):
        finish(db, a, seed, 0.2, ea)
        finish(db, b, seed, 0.4, eb)
        finish(db, c, seed, 0.5, ec)
        finish(db, old, seed, 0.3, None)
    return sid, [a, b, c, old]


def test_estimate_is_shown_everywhere_and_ranks_with_interval_ties(env) -> None:  # type: ignore[no-untyped-def]
    client, auth, db = env
    sid, (a, b, c, old) = study_with_estimates(client, auth, db)
    default = client.get(f"/api/v1/studies/{sid}/ranking", headers=auth).json()
    assert default["metric"] == "val_loss" and [r["candidate_id"] for r in default["data"]] == [a, old, b, c]
    rows = {r["candidate_id"]: r for r in default["data"]}
    assert rows[old]["estimate"] is None
    est_b = rows[b]["estimate"]
    assert est_b["value"] == pytest.approx(0.91) and est_b["low"] == pytest.approx(0.87)
    assert est_b["high"] == pytest.approx(0.94) and est_b["seeds"] == 2 and est_b["metric"] == "val_accuracy"
    assert est_b["method"] == "exp-saturation"

    by_est = client.get(f"/api/v1/studies/{sid}/ranking?metric=estimate", headers=auth).json()
    assert by_est["metric"] == "estimate" and by_est["higher_is_better"] is True
    assert [r["candidate_id"] for r in by_est["data"]] == [b, c, a] and by_est["count"] == 3
    ties = {r["candidate_id"]: r["tied_with"] for r in by_est["data"]}
    assert ties == {b: [c], c: [b], a: []}  # [0.87, 0.94] and [0.82, 0.89] overlap
    assert by_est["data"][0]["score"] == pytest.approx(0.91)
    assert [(r["candidate_id"], r["estimate"]) for r in by_est["unranked"]] == [(old, None)]

    summary = client.get(f"/api/v1/studies/{sid}/summary", headers=auth).json()
    assert {r["id"]: r["estimate"] for r in summary["candidates"]}[b] == est_b
    assert {r["id"]: r["estimate"] for r in summary["candidates"]}[old] is None
    assert summary["ranking"]["metric"] == "val_loss"  # the default (the policy's) is unchanged
    assert {r["candidate_id"]: r["estimate"] for r in summary["ranking"]["data"]}[b] == est_b

    assert client.get(f"/api/v1/candidates/{b}", headers=auth).json()["estimate"] == est_b
    assert client.get(f"/api/v1/candidates/{old}", headers=auth).json()["estimate"] is None


def test_an_unknown_ranking_metric_names_the_query_field(env) -> None:  # type: ignore[no-untyped-def]
    client, auth, _ = env
    sid = client.post("/api/v1/studies", headers=auth, json={"name": "e", "dataset": "mnist1d"}).json()["id"]
    r = client.get(f"/api/v1/studies/{sid}/ranking?metric=estimates", headers=auth)
    assert r.status_code == 422
    assert "metric" in r.text and "estimate" in r.text


def test_status_shows_the_estimate_with_its_interval(env, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    client, auth, db = env
    study_with_estimates(client, auth, db)
    client.headers.update(auth)

    def in_process(server: str, token: str) -> Client:  # the real Client over the app, no socket
        c = Client(server, token)
        c._http.close()
        c._http = client
        return c

    monkeypatch.setattr(remote_cli, "Client", in_process)
    args = build_parser().parse_args(
        ["status", "e", "--metric", "estimate", "--server", "http://testserver", "--token", "t"]
    )
    assert args.func(args) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if "estimate [interval]" in line)  # after the budget line
    rows = [line.split(maxsplit=2) for line in lines[header + 1 : header + 5]]
    assert [r[1] for r in rows] == ["m16", "m24", "m8", "m32"]  # ranked by estimate, then unranked
    assert rows[0][2].startswith("0.9100  91.0% [87.0, 94.0]") and rows[0][2].endswith("(tied)")
    assert rows[3][2].split() == ["succeeded", "-"]  # stored before estimates: no column value
    assert build_parser().parse_args(["status", "e"]).metric == "val_loss"  # the default is unchanged

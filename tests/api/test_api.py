"""The REST API in-process (FastAPI TestClient) on a real, migrated database and a real broker.

Jobs are enqueued (to the embedded filesystem broker) but no worker runs here: the
end-to-end tests in tests/worker/ train them.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from archscreen.api.app import create_app
from archscreen.settings import Settings
from archscreen.store import Database, SchemaOutOfDate
from archscreen.store.auth import create_token

MLP = {"name": "mlp", "layers": ["flatten", {"linear": 16}, "relu"], "head": "classifier"}
LOGREG = {"name": "logreg", "layers": ["flatten"], "head": "classifier"}
BAD = {"name": "bad", "layers": [{"conv1d": {"out": 4, "kernel": 99}}, "flatten"], "head": "classifier"}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=database_url)


@pytest.fixture
def client(settings: Settings, migrated: Database) -> TestClient:
    settings.ensure_dirs()
    with TestClient(create_app(settings)) as c:
        yield c  # type: ignore[misc]


def token_for(db: Database, tenant: str) -> dict[str, str]:
    with db.session() as s:
        return {"Authorization": f"Bearer {create_token(s, tenant)}"}


@pytest.fixture
def auth(migrated: Database) -> dict[str, str]:
    return token_for(migrated, "acme")


def new_study(client: TestClient, auth: dict[str, str], name: str = "s1", **extra: object) -> dict:
    r = client.post("/api/v1/studies", json={"name": name, "dataset": "mnist1d", **extra}, headers=auth)
    assert r.status_code == 201, r.text
    return r.json()


def test_every_route_needs_a_valid_token(client: TestClient) -> None:
    for method, path in [
        ("GET", "/api/v1/studies"),
        ("POST", "/api/v1/studies"),
        ("GET", "/api/v1/candidates/1"),
    ]:
        r = client.request(method, path)
        assert r.status_code == 401 and "archscreen token create" in r.json()["detail"]
        r = client.request(method, path, headers={"Authorization": "Bearer as_nope"})
        assert r.status_code == 401 and r.json()["detail"] == "invalid or revoked API token"
    assert client.get("/healthz").json() == {"status": "ok", "checks": {}}


def test_default_tuner_tunes_the_screening_optimizer(client: TestClient, auth: dict[str, str]) -> None:
    for base, tuner in (("sgd", "fd2"), ("adam", "fd2-adam")):
        made = new_study(client, auth, name=f"t-{base}", screening={"base": base})
        assert made["policy"]["tuner"] == tuner
    chosen = new_study(client, auth, name="t-chosen", screening={"base": "adam"}, policy={"tuner": "salera"})
    assert chosen["policy"]["tuner"] == "salera"


def test_the_tuning_stage_policy_defaults_and_refuses_an_unknown_start(
    client: TestClient, auth: dict[str, str]
) -> None:
    made = new_study(client, auth, name="stage")
    assert (made["policy"]["tuning_start"], made["policy"]["halving"]) == ("screen-weights", False)
    multi = new_study(client, auth, name="stage-multi", policy={"tuning_start": "multi", "halving": True})
    assert (multi["policy"]["tuning_start"], multi["policy"]["halving"]) == ("multi", True)
    for policy, path in (
        ({"tuning_start": "best"}, "body.policy.tuning_start"),
        ({"halving": "sometimes"}, "body.policy.halving"),
    ):
        r = client.post(
            "/api/v1/studies", json={"name": "bad", "dataset": "mnist1d", "policy": policy}, headers=auth
        )
        assert r.status_code == 422 and r.json()["detail"][0]["path"] == path, r.text


def test_study_create_read_list_and_errors(client: TestClient, auth: dict[str, str]) -> None:
    study = new_study(client, auth, screening={"max_epochs": 4, "seeds": [0, 1]}, policy={"top_k": 2})
    assert study["screening"]["seeds"] == [0, 1]
    assert study["policy"]["tuner"] == {"sgd": "fd2", "adam": "fd2-adam"}[study["screening"]["base"]]
    assert client.get(f"/api/v1/studies/{study['id']}", headers=auth).json()["name"] == "s1"
    r = client.post("/api/v1/studies", json={"name": "s1", "dataset": "mnist1d"}, headers=auth)
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    r = client.post("/api/v1/studies", json={"name": "s2", "dataset": "/etc/passwd"}, headers=auth)
    assert r.status_code == 422 and r.json()["detail"][0]["path"] == "body.dataset"
    r = client.post(
        "/api/v1/studies",
        json={"name": "s3", "dataset": "digits", "screening": {"max_epochs": 0, "lr_min": 1, "lr_max": 0.1}},
        headers=auth,
    )
    assert r.status_code == 422
    assert "body.screening.max_epochs" in {d["path"] for d in r.json()["detail"]}
    for i in range(3):
        new_study(client, auth, name=f"p{i}")
    page = client.get("/api/v1/studies?limit=2&offset=1", headers=auth).json()
    assert page["count"] == 4 and len(page["data"]) == 2
    assert client.get("/api/v1/studies?limit=0", headers=auth).json()["detail"][0]["path"] == "query.limit"


def test_other_tenants_see_nothing(client: TestClient, auth: dict[str, str], migrated: Database) -> None:
    study = new_study(client, auth)
    cand = client.post(f"/api/v1/studies/{study['id']}/candidates", json={"spec": MLP}, headers=auth).json()
    other = token_for(migrated, "globex")
    assert client.get(f"/api/v1/studies/{study['id']}", headers=other).status_code == 404
    assert client.get(f"/api/v1/candidates/{cand['data'][0]['id']}", headers=other).status_code == 404
    assert client.get("/api/v1/studies", headers=other).json() == {"data": [], "count": 0}


def test_invalid_specs_get_field_paths_and_store_nothing(client: TestClient, auth: dict[str, str]) -> None:
    study = new_study(client, auth)
    url = f"/api/v1/studies/{study['id']}/candidates"
    r = client.post(url, json={"spec": BAD}, headers=auth)
    assert r.status_code == 422
    assert r.json()["detail"][0]["path"] == "body.spec.layers[0].conv1d.kernel"
    assert r.json()["detail"][0]["loc"] == ["body", "spec", "layers", 0, "conv1d", "kernel"]
    r = client.post(url, json=[{"spec": MLP}, {"spec": BAD}], headers=auth)
    assert r.status_code == 422 and r.json()["detail"][0]["path"].startswith("body[1].spec.layers[0]")
    r = client.post(url, json={"spec": "layers: [flatten\nhead: x"}, headers=auth)
    assert r.status_code == 422 and "YAML" in r.json()["detail"][0]["msg"]
    r = client.post(url, json={"spec": MLP, "colour": "red"}, headers=auth)
    assert r.status_code == 422
    r = client.post(url, content=b"{not json", headers={**auth, "Content-Type": "application/json"})
    assert r.status_code == 422
    assert client.get(url, headers=auth).json() == {"data": [], "count": 0}  # the valid MLP was not stored


def test_candidates_are_idempotent(client: TestClient, auth: dict[str, str]) -> None:
    study = new_study(client, auth, screening={"seeds": [0, 1]})
    url = f"/api/v1/studies/{study['id']}/candidates"
    r = client.post(url, json=[{"spec": MLP}, {"spec": LOGREG, "name": "lr"}], headers=auth)
    assert r.status_code == 201
    body = r.json()
    assert body["count"] == 2 and [c["created"] for c in body["data"]] == [True, True]
    assert [c["name"] for c in body["data"]] == ["mlp", "lr"] and body["data"][0]["state"] == "queued"
    # the same canonical spec again (as YAML text, keys reordered) returns the existing candidate
    yaml_text = "head: classifier\nlayers: [flatten, {linear: 16}, relu]\nname: mlp\n"
    r = client.post(url, json={"spec": yaml_text}, headers=auth)
    assert r.status_code == 200 and r.json()["data"][0]["id"] == body["data"][0]["id"]
    assert r.json()["data"][0]["created"] is False
    # a retried request with the same Idempotency-Key replays the first response
    key = {**auth, "Idempotency-Key": "k-1"}
    small = {"name": "small", "layers": ["flatten", {"linear": 8}], "head": "classifier"}
    first = client.post(url, json={"spec": small}, headers=key)
    again = client.post(url, json={"spec": small}, headers=key)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert client.post(url, json={"spec": LOGREG}, headers=key).status_code == 409
    study_now = client.get(f"/api/v1/studies/{study['id']}", headers=auth).json()
    assert study_now["candidates"] == 3 and study_now["jobs_by_state"] == {"queued": 6}


def test_a_study_stores_and_shows_the_measured_cap_of_its_dataset(
    client: TestClient, auth: dict[str, str]
) -> None:
    """max_epochs "auto" (the default) is resolved when the study is made: the API shows the cap
    that runs, the dataset's measured one (docs/fidelity.md), and its jobs carry it."""
    caps = {"digits": 60, "mnist1d": 30, "chartext": 25, "regression": 60}
    for dataset, cap in caps.items():
        body = {"name": f"cap-{dataset}", "dataset": dataset}
        made = client.post("/api/v1/studies", json=body, headers=auth).json()
        assert made["screening"]["max_epochs"] == cap, dataset
        read = client.get(f"/api/v1/studies/{made['id']}", headers=auth).json()
        assert read["screening"]["max_epochs"] == cap, dataset
    auto = new_study(client, auth, name="auto", screening={"max_epochs": "auto"})
    assert auto["screening"]["max_epochs"] == 30
    fixed = client.post(
        "/api/v1/studies",
        json={"name": "n", "dataset": "digits", "screening": {"max_epochs": 7}},
        headers=auth,
    ).json()
    assert fixed["screening"]["max_epochs"] == 7  # a number overrides
    digits = client.get("/api/v1/studies?name=cap-digits", headers=auth).json()["data"][0]
    cid = client.post(f"/api/v1/studies/{digits['id']}/candidates", json={"spec": MLP}, headers=auth).json()
    d = client.get(f"/api/v1/candidates/{cid['data'][0]['id']}", headers=auth).json()
    assert d["progress"]["max_epochs"] == 60
    for bad in ("often", 0, 2.5, None):
        r = client.post(
            "/api/v1/studies",
            json={"name": "b", "dataset": "digits", "screening": {"max_epochs": bad}},
            headers=auth,
        )
        assert r.status_code == 422, bad
        assert [d["path"] for d in r.json()["detail"]] == ["body.screening.max_epochs"], bad


def test_candidate_detail_and_cancel(client: TestClient, auth: dict[str, str]) -> None:
    study = new_study(client, auth, screening={"max_epochs": 7})
    cid = client.post(f"/api/v1/studies/{study['id']}/candidates", json={"spec": MLP}, headers=auth).json()
    cid = cid["data"][0]["id"]
    d = client.get(f"/api/v1/candidates/{cid}", headers=auth).json()
    assert d["state"] == "queued" and d["progress"]["max_epochs"] == 7 and d["progress"]["eta_s"] is None
    assert [row["path"] for row in d["summary"]][:2] == ["layers[0]", "layers[1]"]
    assert d["num_params"] == sum(r["params"] for r in d["summary"]) + 17 * 10
    r = client.post(f"/api/v1/candidates/{cid}/cancel", headers=auth)
    assert r.status_code == 202 and set(r.json()["states"].values()) == {"cancelled"}
    assert client.get(f"/api/v1/candidates/{cid}", headers=auth).json()["state"] == "cancelled"
    assert client.get("/api/v1/candidates/99999", headers=auth).status_code == 404


def test_metrics_and_readiness(client: TestClient, auth: dict[str, str]) -> None:
    study = new_study(client, auth)
    client.post(f"/api/v1/studies/{study['id']}/candidates", json={"spec": MLP}, headers=auth)
    text = client.get("/metrics").text
    assert 'archscreen_jobs{kind="screen",state="queued"} 1.0' in text
    assert 'archscreen_queue_depth{kind="screen"} 1.0' in text
    assert "archscreen_request_duration_seconds_bucket" in text
    r = client.get("/readyz")  # database and broker are up, but no worker runs in this test
    assert r.status_code == 503
    assert r.json()["checks"]["database"] == "ok" and r.json()["checks"]["broker"] == "ok"
    assert "none seen" in r.json()["checks"]["workers"]


def test_openapi_documents_every_route(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for p in [
        "/api/v1/studies",
        "/api/v1/studies/{study_id}",
        "/api/v1/studies/{study_id}/candidates",
        "/api/v1/candidates/{candidate_id}",
        "/api/v1/candidates/{candidate_id}/cancel",
        "/readyz",
    ]:
        assert p in paths


def test_refuses_to_start_on_an_old_schema(settings: Settings) -> None:
    db = Database(settings.resolved_database_url)
    db.migrate()
    db.downgrade("base")
    with pytest.raises(SchemaOutOfDate, match="archscreen migrate"):
        create_app(settings)
    db.dispose()


def test_out_of_range_ids_and_counters_are_422_not_500(client: TestClient, auth: dict[str, str]) -> None:
    huge = 2**70
    for method, path in [
        ("GET", f"/api/v1/candidates/{huge}"),
        ("POST", f"/api/v1/tuning-jobs/{huge}/cancel"),
        ("GET", f"/api/v1/studies/{huge}"),
        ("GET", f"/api/v1/studies/1/candidates?offset={huge}"),
        ("GET", f"/api/v1/candidates/1?since={huge}"),
        ("GET", "/api/v1/candidates/0"),
    ]:
        r = client.request(method, path, headers=auth)
        assert r.status_code == 422, (path, r.status_code, r.text)
    r = client.post(
        "/api/v1/studies",
        headers=auth,
        json={"name": "x", "dataset": "mnist1d", "screening": {"seeds": [huge]}},
    )
    assert r.status_code == 422 and r.json()["detail"][0]["path"] == "body.screening.seeds[0]"


def test_what_the_schema_forbids_is_a_422_naming_the_field(client: TestClient, auth: dict[str, str]) -> None:
    """The other side of tests/api/test_openapi.py::test_the_schema_states_what_a_submission_needs."""
    sid, other = new_study(client, auth)["id"], new_study(client, auth, "s2")["id"]
    refused = [
        (f"/api/v1/studies/{sid}/candidates", [], "body"),
        (f"/api/v1/studies/{sid}/candidates", {"spec": ""}, "body.spec"),
        (f"/api/v1/studies/{sid}/candidates", {"spec": {}}, "body.spec.head"),
        ("/api/v1/studies", {"name": "", "dataset": "mnist1d"}, "body.name"),
        (
            "/api/v1/studies",
            {"name": "lr", "dataset": "mnist1d", "screening": {"lr_min": 0.1, "lr_max": 0.1}},
            "body.screening",
        ),
    ]
    for path, body, field in refused:
        r = client.post(path, json=body, headers=auth)
        assert r.status_code == 422 and field in [d["path"] for d in r.json()["detail"]], (body, r.text)
    cand = client.post(f"/api/v1/studies/{sid}/candidates", json={"spec": LOGREG}, headers=auth).json()[
        "data"
    ][0]
    r = client.post(f"/api/v1/studies/{other}/promote", json={"candidate_ids": [cand["id"]]}, headers=auth)
    assert r.status_code == 422 and r.json()["detail"][0]["path"] == "body.candidate_ids", r.text

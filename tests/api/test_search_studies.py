"""POST /studies with a search space (issue 29): validation paths, progress, no submitted candidates."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from archscreen.api.app import create_app
from archscreen.settings import Settings
from archscreen.store import Database
from tests.api.test_api import token_for


@pytest.fixture
def client(database_url: str, migrated: Database, tmp_path: Path) -> TestClient:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    settings.ensure_dirs()
    with TestClient(create_app(settings)) as c:
        yield c  # type: ignore[misc]


@pytest.fixture
def auth(migrated: Database) -> dict[str, str]:
    return token_for(migrated, "acme")


SPACE_TEXT = (Path(__file__).parents[2] / "examples/spaces/mlp_space.yaml").read_text()
URL = "/api/v1/studies"


def _post(client: TestClient, auth: dict[str, str], **body: object):  # type: ignore[no-untyped-def]
    return client.post(URL, json={"name": "search", "dataset": "digits", **body}, headers=auth)


def test_bad_space_and_search_are_422_naming_the_path(client: TestClient, auth: dict[str, str]) -> None:
    bad_count = SPACE_TEXT.replace("{int: [1, 4], name: depth}", "{int: [4, 1], name: depth}")
    r = _post(client, auth, space=bad_count, search={"trials": 4})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["path"].startswith("body.space.layers[1].repeat.count")
    r = _post(client, auth, space={"layers": ["flatten"], "head": "classifier"})
    assert r.status_code == 422 and r.json()["detail"][0]["path"].startswith("body.space")
    r = _post(client, auth, space=SPACE_TEXT, search={"trials": 0})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:3] == ["body", "search", "trials"]
    r = _post(client, auth, space=SPACE_TEXT, search={"trials": 4, "sampler": "grid"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:3] == ["body", "search", "sampler"]
    assert "dropout_p' is continuous: a grid needs step" in r.json()["detail"][0]["msg"]
    r = _post(client, auth, space=SPACE_TEXT, search={"trials": 4, "sampler": "nsga2"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:3] == ["body", "search", "objectives"]
    r = _post(client, auth, space=SPACE_TEXT, search={"objectives": ["val_loss", "params"]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:3] == ["body", "search", "objectives"]
    r = _post(client, auth, space=SPACE_TEXT, search={"budget_cpu_s": 0})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:3] == ["body", "search", "budget_cpu_s"]
    r = _post(client, auth, search={"trials": 4})  # a search needs a space
    assert r.status_code == 422
    for scalar_text in ("31", "[1, 2]", "null"):  # YAML text that is no mapping (schemathesis: a 500)
        r = _post(client, auth, space=scalar_text, search={"trials": 4})
        assert r.status_code == 422 and r.json()["detail"][0]["path"].startswith("body.space"), r.text
    assert client.get(URL, headers=auth).json()["count"] == 0


def test_grid_needs_trials_equal_to_its_size(client: TestClient, auth: dict[str, str]) -> None:
    from tests.worker.test_search_samplers import GRID_SPACE

    r = _post(client, auth, space=GRID_SPACE, search={"trials": 5, "sampler": "grid"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:3] == ["body", "search", "sampler"]
    assert "grid has 8 points and trials is 5; set trials to 8" in r.json()["detail"][0]["msg"]
    r = _post(client, auth, space=GRID_SPACE, search={"trials": 8, "sampler": "grid"})
    assert r.status_code == 201, r.text
    assert r.json()["search"]["sampler"] == "grid"
    r = _post(
        client,
        auth,
        name="pareto",
        space=SPACE_TEXT,
        search={"trials": 4, "sampler": "nsga2", "objectives": ["val_loss", "params"]},
    )
    assert r.status_code == 201, r.text
    r = _post(
        client,
        auth,
        name="fast",
        space=SPACE_TEXT,
        search={"trials": 4, "sampler": "nsga2", "objectives": ["val_loss", "latency"]},
    )
    assert r.status_code == 201 and r.json()["search"]["objectives"] == ["val_loss", "latency"], r.text
    r = _post(
        client,
        auth,
        name="x",
        space=SPACE_TEXT,
        search={"sampler": "nsga2", "objectives": ["params", "val_loss"]},
    )
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:3] == ["body", "search", "objectives"]


def test_search_study_shows_progress_and_takes_no_candidates(
    client: TestClient, auth: dict[str, str]
) -> None:
    r = _post(client, auth, space=SPACE_TEXT, search={"trials": 4, "parallel": 2, "seed": 1})
    assert r.status_code == 201, r.text
    study = client.get(f"{URL}/{r.json()['id']}", headers=auth).json()
    assert study["search"] == {
        "sampler": "tpe",
        "trials": 4,
        "parallel": 2,
        "asked": 0,  # no worker runs here
        "told": 0,
        "best_value": None,
        "best_params": None,
        "objectives": ["val_loss"],
        "running": 0,
        "pruned": 0,
        "failed": 0,
        "budget_cpu_s": None,
        "cpu_seconds": 0.0,
        "stopped": False,
        "asha": {"enabled": True, "reduction_factor": 3, "min_epochs": 1},  # on by default
    }
    spec = {"name": "mlp", "layers": ["flatten", {"linear": 16}, "relu"], "head": "classifier"}
    r = client.post(f"{URL}/{study['id']}/candidates", json={"spec": spec}, headers=auth)
    assert r.status_code == 409
    plain = _post(client, auth, name="plain").json()
    assert plain["search"] is None


def test_a_budgeted_search_may_name_no_trial_count_and_runs_until_its_budget(
    client: TestClient, auth: dict[str, str]
) -> None:
    r = _post(client, auth, space=SPACE_TEXT, search={"trials": 501})  # past the limit, no budget
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:3] == ["body", "search", "trials"]
    assert "need a budget (search.budget_cpu_s)" in r.json()["detail"][0]["msg"]
    r = _post(client, auth, space=SPACE_TEXT, search={"trials": 10_001, "budget_cpu_s": 60})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:3] == ["body", "search", "trials"]
    r = _post(client, auth, space=SPACE_TEXT, search={"budget_cpu_s": 60})
    assert r.status_code == 201, r.text
    assert (r.json()["search"]["trials"], r.json()["search"]["budget_cpu_s"]) == (10_000, 60.0)
    r = _post(client, auth, name="more", space=SPACE_TEXT, search={"trials": 800, "budget_cpu_s": 60})
    assert r.status_code == 201 and r.json()["search"]["trials"] == 800
    r = _post(client, auth, name="count", space=SPACE_TEXT, search={"trials": 30, "budget_cpu_s": 60})
    assert r.status_code == 201 and r.json()["search"]["trials"] == 30  # a count given is kept


def test_openapi_documents_space_and_search(client: TestClient) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert {"space", "search"} <= set(schemas["StudyCreate"]["properties"])
    assert set(schemas["SearchConfig"]["properties"]) == {
        "sampler",
        "objectives",
        "trials",
        "parallel",
        "seed",
        "budget_cpu_s",
        "asha",
    }
    assert set(schemas["AshaConfig"]["properties"]) == {"enabled", "reduction_factor", "min_epochs"}
    assert "rung_epochs" in schemas["CandidateOut"]["properties"]
    assert "rung_epochs" in schemas["RankRowOut"]["properties"]
    assert "target_epochs" in schemas["JobOut"]["properties"]
    assert "search" in schemas["StudyOut"]["properties"]


def test_asha_settings_are_validated_naming_the_field(client: TestClient, auth: dict[str, str]) -> None:
    screening = {"max_epochs": 9}
    r = _post(client, auth, space=SPACE_TEXT, screening=screening, search={"asha": {"min_epochs": 10}})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["path"] == "body.search.asha.min_epochs"
    assert "max_epochs 9" in r.json()["detail"][0]["msg"]
    r = _post(client, auth, space=SPACE_TEXT, search={"asha": {"reduction_factor": 0}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:4] == [
        "body",
        "search",
        "asha",
        "reduction_factor",
    ]
    r = _post(client, auth, space=SPACE_TEXT, search={"asha": {"eta": 3}})  # unknown key
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][:4] == ["body", "search", "asha", "eta"]
    assert client.get(URL, headers=auth).json()["count"] == 0
    # off: no check against max_epochs (no rungs); `asha: false` is short for {enabled: false}
    r = _post(client, auth, space=SPACE_TEXT, screening=screening, search={"asha": False})
    assert r.status_code == 201, r.text
    assert r.json()["search"]["asha"] == {"enabled": False, "reduction_factor": 3, "min_epochs": 1}
    r = _post(
        client, auth, name="r3", space=SPACE_TEXT, search={"asha": {"reduction_factor": 2, "min_epochs": 3}}
    )
    assert r.status_code == 201 and r.json()["search"]["asha"]["reduction_factor"] == 2


def test_stop_a_search(client: TestClient, auth: dict[str, str]) -> None:
    r = _post(client, auth, space=SPACE_TEXT, search={"trials": 4})
    sid = r.json()["id"]
    assert r.json()["search"]["stopped"] is False
    for _ in range(2):  # idempotent
        r = client.post(f"{URL}/{sid}/search/stop", headers=auth)
        assert r.status_code == 200 and r.json()["search"]["stopped"] is True, r.text
    plain = _post(client, auth, name="plain").json()
    r = client.post(f"{URL}/{plain['id']}/search/stop", headers=auth)
    assert r.status_code == 409 and "not a search study" in r.text
    assert client.post(f"{URL}/999999/search/stop", headers=auth).status_code == 404

"""GET /studies/{id}/search (issue 29, "Show the search"): trials, best-so-far against compute,
fANOVA importances and the Pareto front, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from archscreen.api import search_view
from archscreen.api.app import create_app
from archscreen.settings import Settings
from archscreen.store import Database
from archscreen.store import search as search_store
from archscreen.store import studies as study_store
from archscreen.store.models import Job
from tests.api.test_api import token_for
from tests.worker.procs import BACKENDS, backend_deployment, wait_for

SPACE_TEXT = (Path(__file__).parents[2] / "examples/spaces/mlp_space.yaml").read_text()
URL = "/api/v1/studies"
TINY = {
    "max_epochs": 1,
    "patience": 50,
    "batch_size": 64,
    "seeds": [0],
    "base": "sgd",
    "max_steps_per_epoch": 5,
}


@pytest.fixture
def settings(database_url: str, migrated: Database, tmp_path: Path) -> Settings:
    s = Settings(data_dir=tmp_path / "data", database_url=database_url)
    s.ensure_dirs()
    return s


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def _search_study(client: TestClient, auth: dict[str, str], **search: Any) -> int:
    body = {"name": "search", "dataset": "digits", "space": SPACE_TEXT, "screening": TINY}
    r = client.post(
        URL, json={**body, "search": {"trials": 4, "parallel": 2, "seed": 3, **search}}, headers=auth
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _pareto(points: dict[int, tuple[float, float]]) -> list[int]:
    """Non-dominated trial numbers (both objectives minimised), by hand."""

    def dominated(a: tuple[float, float]) -> bool:
        return any(b[0] <= a[0] and b[1] <= a[1] and b != a for b in points.values())

    return sorted(n for n, p in points.items() if not dominated(p))


def _two_objective_trials(settings: Settings, study_id: int) -> Any:
    """An Optuna study with two directions under the service's name for ``study_id`` (the service
    makes NSGA-II studies on branch samp; the view reads whatever Optuna holds)."""
    import optuna
    from optuna.distributions import FloatDistribution, IntDistribution
    from optuna.trial import TrialState, create_trial

    from archscreen.store.optuna_storage import optuna_storage

    ostudy = optuna.create_study(
        storage=optuna_storage(settings.resolved_database_url),
        study_name=f"archscreen-{study_id}",
        directions=["minimize", "minimize"],
    )
    ostudy.set_metric_names(["val_loss", "num_params"])
    dists = {"width": IntDistribution(8, 256), "dropout_p": FloatDistribution(0.0, 0.5)}
    points = [
        (16, 0.1, 0.9, 300.0),
        (64, 0.3, 0.5, 900.0),
        (256, 0.2, 0.4, 4000.0),
        (32, 0.4, 0.95, 800.0),
        (128, 0.05, 0.45, 5000.0),
        (8, 0.25, 1.2, 100.0),
    ]
    for width, p, loss, size in points:
        ostudy.add_trial(
            create_trial(params={"width": width, "dropout_p": p}, distributions=dists, values=[loss, size])
        )
    ostudy.add_trial(
        create_trial(params={"width": 48, "dropout_p": 0.1}, distributions=dists, state=TrialState.FAIL)
    )
    return ostudy


def test_search_view_404_409_and_empty(client: TestClient, migrated: Database) -> None:
    auth = token_for(migrated, "acme")
    assert client.get(f"{URL}/999/search", headers=auth).status_code == 404
    plain = client.post(URL, json={"name": "plain", "dataset": "digits"}, headers=auth).json()
    r = client.get(f"{URL}/{plain['id']}/search", headers=auth)
    assert r.status_code == 409 and "not a search study" in r.json()["detail"]
    study_id = _search_study(client, auth)
    other = token_for(migrated, "other")
    assert client.get(f"{URL}/{study_id}/search", headers=other).status_code == 404  # another tenant's
    view = client.get(f"{URL}/{study_id}/search", headers=auth).json()  # no step ran: no Optuna study
    assert view["trials"] == [] and view["count"] == 0 and view["best_so_far"] == []
    assert view["importances"] is None and view["pareto_front"] is None
    assert view["importances_reason"] == "importances need >= 4 complete trials (0 so far)"
    assert (view["directions"], view["objectives"], view["planned_trials"]) == (["minimize"], ["val_loss"], 4)


def test_two_objectives_pareto_importances_compute_and_cache(
    client: TestClient, migrated: Database, settings: Settings
) -> None:
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    auth = token_for(migrated, "acme")
    study_id = _search_study(client, auth)
    ostudy = _two_objective_trials(settings, study_id)
    with migrated.session() as s:  # trials 0 and 1 became one candidate (a repeated point)
        study = study_store.study_by_id(s, study_id)
        assert study is not None
        cand, _, jobs = study_store.add_candidate(
            s, study, name="trial-0", spec={}, spec_hash="h", num_params=1, summary=[], max_attempts=1
        )
        job = s.get(Job, jobs[0].id)
        assert job is not None
        job.state, job.started_at = "succeeded", job.created_at
        job.finished_at = job.created_at + timedelta(seconds=7.5)
        assert search_store.link_trial(s, study_id, 0, candidate_id=cand.id)
        assert search_store.link_trial(s, study_id, 1, candidate_id=cand.id)
        assert search_store.link_trial(s, study_id, 6, told="pruned", refused="over max_params")
    r = client.get(f"{URL}/{study_id}/search", headers=auth)
    assert r.status_code == 200, r.text
    view = r.json()
    assert view["directions"] == ["minimize", "minimize"] and view["objectives"] == ["val_loss", "num_params"]
    trials = {t["number"]: t for t in view["trials"]}
    assert view["count"] == 7 and trials[6]["state"] == "FAIL" and trials[6]["values"] is None
    assert trials[6]["refused"] == "over max_params" and trials[6]["compute_s"] == 0.0
    assert (trials[0]["candidate_id"], trials[0]["compute_s"]) == (cand.id, 7.5)
    assert (trials[1]["candidate_id"], trials[1]["compute_s"]) == (cand.id, 0.0)  # paid by trial 0
    assert trials[2]["candidate_id"] is None and trials[2]["compute_s"] is None
    points = {n: tuple(t["values"]) for n, t in trials.items() if t["state"] == "COMPLETE"}
    assert view["pareto_front"] == _pareto(points) == [0, 1, 2, 5]
    assert view["compute_total_s"] == 7.5
    curve = view["best_so_far"]  # told order = add order here; best first objective so far
    assert [p["value"] for p in curve] == [0.9, 0.5, 0.4, 0.4, 0.4, 0.4, 0.4]
    assert [p["compute_s"] for p in curve] == [7.5] * 7
    evaluator = FanovaImportanceEvaluator(seed=0)
    for i, imp in enumerate(view["importances"]):
        expected = get_param_importances(ostudy, evaluator=evaluator, target=lambda t, i=i: t.values[i])
        assert imp["objective"] == i and imp["values"] == pytest.approx(expected)
        assert list(imp["values"]) == sorted(imp["values"], key=lambda k: -imp["values"][k])
    assert view["importances_reason"] is None

    etag = r.headers["ETag"]
    assert client.get(f"{URL}/{study_id}/search", headers={**auth, "If-None-Match": etag}).status_code == 304
    fits = search_view.importance_fits
    with migrated.session() as s:  # a new version (an epoch, a link) without a new complete trial
        assert search_store.link_trial(s, study_id, 3)
    again = client.get(f"{URL}/{study_id}/search", headers={**auth, "If-None-Match": etag})
    assert again.status_code == 200 and again.headers["ETag"] != etag
    assert again.json()["importances"] == view["importances"] and search_view.importance_fits == fits


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_real_search_study_view(backend: str, tmp_path: Path) -> None:
    """A 4-trial search of the MLP space on digits, screened by a real worker process: the view
    agrees with Optuna's own study, the jobs' times and Optuna's own fANOVA evaluator."""
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    from archscreen.api.search_view import load_optuna_study

    with backend_deployment(backend, tmp_path) as d, TestClient(create_app(d.settings)) as client:
        d.start_worker(concurrency=2)
        auth = token_for(d.db, "acme")
        study_id = _search_study(client, auth)

        def told() -> bool:
            view = client.get(f"{URL}/{study_id}/search", headers=auth).json()
            return view["count"] == 4 and all(t["told_at"] for t in view["trials"])

        wait_for(told, 240, "the 4 trials to be told", d.logs)
        view = client.get(f"{URL}/{study_id}/search", headers=auth).json()
        with d.db.session() as s:
            study = study_store.study_by_id(s, study_id)
            assert study is not None
            links = search_store.links_of(s, study_id)
            jobs = study_store.jobs_of(s, [link.candidate_id for link in links.values() if link.candidate_id])
        ostudy = load_optuna_study(d.settings, study)
        assert ostudy is not None
        by_number = {t.number: t for t in ostudy.trials}
        seen: set[int] = set()
        for t in view["trials"]:
            ot = by_number[t["number"]]
            assert t["state"] == ot.state.name and t["params"] == ot.params
            assert t["values"] == (ot.values if ot.state.name == "COMPLETE" else None)
            cid = links[t["number"]].candidate_id
            assert t["candidate_id"] == cid
            if cid is not None:
                wall = sum((j.finished_at - j.started_at).total_seconds() for j in jobs[cid])  # type: ignore[operator]
                assert t["compute_s"] == pytest.approx(0.0 if cid in seen else wall) and wall > 0
                seen.add(cid)
        complete = [t for t in view["trials"] if t["state"] == "COMPLETE"]
        assert len(complete) == 4, view["trials"]  # tiny MLPs on digits: every trial trains
        curve = view["best_so_far"]
        assert len(curve) == 4 and curve[-1]["value"] == min(t["values"][0] for t in complete)
        assert all(
            a["value"] >= b["value"] and a["compute_s"] <= b["compute_s"]
            for a, b in itertools.pairwise(curve)
        )
        assert curve[-1]["compute_s"] == pytest.approx(view["compute_total_s"])
        expected = get_param_importances(ostudy, evaluator=FanovaImportanceEvaluator(seed=0))
        assert view["importances"] is not None, view["importances_reason"]
        assert view["importances"][0]["values"] == pytest.approx(expected) and expected
        assert view["pareto_front"] is None and view["directions"] == ["minimize"]

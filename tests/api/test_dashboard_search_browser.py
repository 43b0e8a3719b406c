"""A search study's plots and the ranking's metric selector in a real browser (Debian's chromium
driven by Playwright, as tests/api/test_dashboard_browser.py), on `archscreen up` with real workers.
Screenshots go to test-artifacts/dashboard/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from archscreen.ci_gate import local_service
from archscreen.client import Client
from tests.api.test_dashboard_browser import CHROMIUM, FLAGS, new_page, shot

pytestmark = pytest.mark.slow

SPACE_TEXT = (Path(__file__).parents[2] / "examples/spaces/mlp_space.yaml").read_text()
TINY = {
    "max_epochs": 2,
    "patience": 50,
    "batch_size": 64,
    "seeds": [0],
    "base": "sgd",
    "max_steps_per_epoch": 8,
}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    data_dir = tmp_path_factory.mktemp("dashboard-search")
    with local_service(data_dir, workers=2) as (url, token):
        yield url, token, data_dir


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: apt-get install chromium (.ci/run does)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def _get(url: str, token: str, path: str) -> Any:
    r = httpx.get(f"{url}/api/v1{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _wait_told(url: str, token: str, study_id: int, trials: int) -> dict[str, Any]:
    import time

    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        with Client(url, token) as c:  # the typed client's method for the route
            view = c.search_view(study_id).model_dump(mode="json")
        if view["count"] == trials and all(t["told_at"] for t in view["trials"]):
            return view
        time.sleep(1)
    raise AssertionError(f"search study {study_id} did not tell {trials} trials in 240 s: {view}")


def _open(page: Page, url: str, token: str, fragment: str) -> None:
    page.goto(url + "/")
    page.fill("#token", token)
    page.click("button[type=submit]")
    expect(page.locator("#studies")).to_be_visible()
    page.evaluate(f"location.hash = {fragment!r}")


def _ranked_names(page: Page) -> list[str]:
    return page.locator("#ranking tbody tr td:nth-child(2)").all_inner_texts()


def test_search_plots_and_metric_selector(service: tuple[str, str, Path], browser: Browser) -> None:
    url, token, _ = service
    with Client(url, token) as c:
        search = {"trials": 4, "parallel": 2, "seed": 3, "asha": False}  # every trial COMPLETE: importances
        study = c.create_search(
            "dash-search",
            dataset="digits",
            space=SPACE_TEXT,
            search=search,
            screening=TINY,
            policy={"auto": False},
        )
        small = c.create_search(
            "dash-one",
            dataset="digits",
            space=SPACE_TEXT,
            search={**search, "trials": 1},
            screening=TINY,
            policy={"auto": False},
        )
    view = _wait_told(url, token, study.id, 4)
    _wait_told(url, token, small.id, 1)
    page, errors = new_page(browser)
    _open(page, url, token, f"#/studies/{study.id}")
    expect(page.locator("#search-view")).to_contain_text("4 of 4 trials")
    complete = [t for t in view["trials"] if t["state"] == "COMPLETE"]
    marked = [t for t in view["trials"] if t["state"] in ("PRUNED", "FAIL")]
    expect(page.locator("svg[data-chart='trials'] circle.trial-pt")).to_have_count(len(complete))
    expect(page.locator("svg[data-chart='trials'] path.trial-mark")).to_have_count(len(marked))
    expect(page.locator("svg[data-chart='best_so_far'] circle.pt")).to_have_count(len(view["best_so_far"]))
    assert view["importances"] is not None, view["importances_reason"]
    imp = view["importances"][0]["values"]
    bars = page.locator("svg[data-chart='importances'] rect.imp-bar")
    expect(bars).to_have_count(len(imp))
    shown = dict(
        zip(
            bars.evaluate_all("bs => bs.map(b => b.dataset.param)"),
            bars.evaluate_all("bs => bs.map(b => Number(b.dataset.value))"),
            strict=True,
        )
    )
    assert shown == pytest.approx(imp)
    expect(page.locator("[data-empty='pareto']")).to_contain_text("needs two objectives")
    shot(page, "search-study")

    # the metric selector: each metric the ranking route offers orders the table as the route does
    options = page.locator("#rank-metric option").evaluate_all("os => os.map(o => o.value)")
    assert {"val_loss", "val_accuracy", "val_balanced_accuracy", "val_macro_f1"} <= set(options)
    orders = {}
    for metric in ("val_accuracy", "val_macro_f1", "val_balanced_accuracy", "val_loss"):
        page.select_option("#rank-metric", metric)
        expect(page.locator("#ranking").locator("xpath=..").locator("h2")).to_contain_text(
            f"Ranking ({metric},"
        )
        expected = [
            r["name"] for r in _get(url, token, f"/studies/{study.id}/ranking?metric={metric}")["data"]
        ]
        assert _ranked_names(page) == expected and len(expected) == len(complete)
        assert page.evaluate("location.hash") == f"#/studies/{study.id}?metric={metric}"
        orders[metric] = expected
    page.select_option("#rank-metric", "val_macro_f1")
    page.reload()  # the choice is in the hash: it survives a reload (and a shared link)
    expect(page.locator("#rank-metric")).to_have_value("val_macro_f1")
    assert _ranked_names(page) == orders["val_macro_f1"]
    assert errors == []
    page.close()

    page, errors = new_page(browser)
    _open(page, url, token, f"#/studies/{small.id}")
    expect(page.locator("[data-empty='importances']")).to_have_text(
        "importances need >= 4 complete trials (1 so far)"
    )
    expect(
        page.locator("svg[data-chart='trials'] circle.trial-pt, svg[data-chart='trials'] path.trial-mark")
    ).to_have_count(1)
    assert errors == []
    page.close()


def test_pareto_front_of_a_two_objective_search(service: tuple[str, str, Path], browser: Browser) -> None:
    """Two objectives (branch samp makes NSGA-II studies; here an Optuna study with two directions
    is written under a finished search study's name in the service's own storage)."""
    import optuna
    from optuna.distributions import IntDistribution

    from archscreen.settings import Settings
    from archscreen.store import Database
    from archscreen.store import search as search_store
    from archscreen.store import studies as study_store
    from archscreen.store.optuna_storage import optuna_storage

    url, token, data_dir = service
    with Client(url, token) as c:
        tenant_of = c.create_study("tenant-probe", dataset="digits").id  # a study of this token's tenant
    settings = Settings(data_dir=data_dir)
    db = Database(settings.resolved_database_url)
    with db.session() as s:
        tenant_id = study_store.study_by_id(s, tenant_of).tenant_id  # type: ignore[union-attr]
        study = study_store.create_study(
            s,
            tenant_id,
            name="two-objectives",
            dataset="digits",
            screening=TINY,
            policy={"auto": False},
            space={"layers": ["flatten"], "head": "classifier"},
            search={"trials": 1},
        )
        search_store.link_trial(s, study.id, 0, told="complete")  # done: no worker steps it
    db.dispose()
    ostudy = optuna.create_study(
        storage=optuna_storage(settings.resolved_database_url),
        study_name=f"archscreen-{study.id}",
        directions=["minimize", "minimize"],
    )
    dist = {"width": IntDistribution(8, 512)}
    for width, loss in ((8, 0.9), (32, 0.5), (64, 0.55), (128, 0.3), (256, 0.35), (512, 0.29)):
        ostudy.add_trial(
            optuna.trial.create_trial(
                params={"width": width}, distributions=dist, values=[loss, float(width * 100)]
            )
        )
    front = sorted(t.number for t in ostudy.best_trials)
    assert front == [0, 1, 3, 5]
    page, errors = new_page(browser)
    _open(page, url, token, f"#/studies/{study.id}")
    pareto = page.locator("svg[data-chart='pareto'] circle.pareto-pt")
    expect(pareto).to_have_count(len(front))
    assert sorted(pareto.evaluate_all("ps => ps.map(p => Number(p.dataset.number))")) == front
    expect(page.locator("svg[data-chart='pareto'] circle.dominated-pt")).to_have_count(2)
    expect(page.locator("svg[data-chart='importances-0'] rect.imp-bar")).to_have_count(1)
    expect(page.locator("svg[data-chart='importances-1'] rect.imp-bar")).to_have_count(1)
    shot(page, "search-pareto")
    assert errors == []
    page.close()

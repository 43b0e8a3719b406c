"""The built-in dashboard in a real browser (Debian's chromium driven by Playwright).

The embedded service (`archscreen up`) trains a small study with real worker
processes while the page is open; the page must follow it without a reload.
Screenshots of each page go to test-artifacts/dashboard/.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from archscreen.ci_gate import local_service
from archscreen.client import Client
from tests.conftest import ROOT

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS = ROOT / "test-artifacts" / "dashboard"
SPECS = [
    {"name": "logreg", "layers": ["flatten"], "head": "classifier"},
    {"name": "mlp", "layers": ["flatten", {"linear": 64}, "relu"], "head": "classifier"},
    {
        "name": "cnn",
        "layers": [
            {"conv1d": {"out": 16, "kernel": 5, "padding": 2}},
            "relu",
            "flatten",
            {"linear": 32},
            "relu",
        ],
        "head": "classifier",
    },
]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """`archscreen up` in the background (the same helper `archscreen ci --local` uses)."""
    with local_service(tmp_path_factory.mktemp("dashboard"), workers=2) as (url, token):
        yield url, token


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: apt-get install chromium (.ci/run does)"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


def new_page(browser: Browser) -> tuple[Page, list[str]]:
    page = browser.new_page(viewport={"width": 1300, "height": 1400})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return page, errors


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_invalid_token_gets_a_clear_message(service: tuple[str, str], browser: Browser) -> None:
    url, _ = service
    page, errors = new_page(browser)
    page.goto(url + "/")
    expect(page.locator("#token")).to_be_visible()
    page.fill("#token", "as_not-a-real-token")
    page.click("button[type=submit]")
    message = page.locator("#login-message")
    expect(message).to_be_visible()
    expect(message).to_contain_text("not accepted")
    expect(message).to_contain_text("archscreen token create")
    shot(page, "invalid-token")
    assert errors == [] or all("401" in e for e in errors)
    page.close()


def test_study_page_follows_training_live_and_promotes(service: tuple[str, str], browser: Browser) -> None:
    url, token = service
    with Client(url, token) as c:
        study = c.create_study(
            "browser",
            dataset="mnist1d",
            screening={"max_epochs": 6, "patience": 6, "batch_size": 64, "base": "sgd"},
            policy={"top_k": 2, "tuner": "fd2", "auto": False, "starts": 1},  # one tuning job each
        )
        c.add_candidates(study.id, [{"spec": s} for s in SPECS])
    page, errors = new_page(browser)
    page.goto(url + "/")
    page.fill("#token", token)
    page.click("button[type=submit]")
    expect(page.locator(f"#studies tr[data-study='{study.id}']")).to_be_visible()
    shot(page, "studies")
    page.click(f"#studies a[href='#/studies/{study.id}']")
    rows = page.locator("#candidates tbody tr")
    expect(rows).to_have_count(3)
    first_states = rows.evaluate_all("rs => rs.map(r => r.dataset.state)")
    assert first_states != ["succeeded"] * 3, "the study finished before the page could watch it"
    page.evaluate("window.__marker = 42")
    # the page updates itself (SSE) until every candidate is done: no reload, no navigation
    expect(page.locator("#candidates tbody tr[data-state='succeeded']")).to_have_count(3, timeout=240_000)
    assert page.evaluate("window.__marker") == 42 and page.evaluate("window.__archscreenBoot") == 1
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    expect(page.locator("#live")).to_have_text("live")

    with Client(url, token) as c:
        epochs = sum(len(c.candidate(x.id).runs[0].curves) for x in c.candidates(study.id))
    # the curves chart plots every stored epoch of every candidate; the posterior has one bar per copy
    expect(page.locator("svg[data-chart='val_loss'] circle.pt")).to_have_count(epochs)
    expect(page.locator("svg[data-chart='val_accuracy'] circle.pt")).to_have_count(epochs)
    bars = page.locator("svg[data-chart='posterior'] rect.bar")
    expect(bars).to_have_count(10)
    weights = bars.evaluate_all("bs => bs.map(b => Number(b.dataset.value))")
    assert abs(sum(weights) - 1) < 1e-6 and max(weights) > 0
    expect(page.locator("#ranking tbody tr")).to_have_count(3)
    # each candidate's estimate: a band on its validation-accuracy curve, its value in the ranking
    with Client(url, token) as c:
        ids = {x.name: x.id for x in c.candidates(study.id)}
        estimates = {name: c.candidate(cid).estimate for name, cid in ids.items()}
    assert all(e is not None and e.metric == "val_accuracy" for e in estimates.values()), estimates
    for name, e in estimates.items():
        band = page.locator(f"svg[data-chart='val_accuracy'] rect.est-band[data-series='{name}']")
        expect(band).to_have_count(1)
        assert float(band.get_attribute("data-low") or "nan") == pytest.approx(e.low)
        assert float(band.get_attribute("data-high") or "nan") == pytest.approx(e.high)
    cells = page.locator("#ranking td.est")
    expect(cells).to_have_count(3)
    assert all(t.startswith("est. ") and "[" in t for t in cells.all_inner_texts())
    shown = sorted(float(v) for v in cells.evaluate_all("cs => cs.map(c => c.dataset.estimate)"))
    assert shown == pytest.approx(sorted(e.value for e in estimates.values()))
    shot(page, "study")

    page.fill("#top-k", "2")
    page.click("#promote")
    tuning = page.locator("#tuning-jobs tbody tr")
    expect(tuning).to_have_count(2, timeout=30_000)
    expect(page.locator("#tuning-jobs tbody tr[data-state='succeeded']")).to_have_count(2, timeout=240_000)
    shot(page, "study-tuned")

    page.click("#tuning-jobs tbody tr >> nth=0 >> a")
    expect(page.locator("#recommended-lr")).not_to_have_text("–")
    assert page.locator("svg[data-chart='trajectory'] circle.pt").count() > 10
    assert page.locator("svg[data-chart='tuning_loss'] circle.pt").count() >= 2
    shot(page, "tuning-job")

    page.go_back()
    page.click("#candidates a >> nth=2")
    expect(page.locator("#layers tbody tr")).to_have_count(5)
    expect(page.locator("#spec")).to_contain_text('"conv1d"')
    expect(page.locator("#estimate")).to_contain_text("est. ")
    shot(page, "candidate")
    assert errors == []
    page.close()

    # a candidate without an estimate (a result stored before estimates: the API's null) draws no band
    page, errors = new_page(browser)

    def without_estimate(route: Route) -> None:
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "estimate": None})

    page.route(f"**/api/v1/candidates/{ids['logreg']}", without_estimate)
    page.goto(url + "/")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.click(f"#studies a[href='#/studies/{study.id}']")
    bands = page.locator("svg[data-chart='val_accuracy'] rect.est-band")
    expect(bands).to_have_count(2)
    assert sorted(bands.evaluate_all("bs => bs.map(b => b.dataset.series)")) == ["cnn", "mlp"]
    assert errors == []
    page.close()


def test_datasets_page_lists_uploads_and_the_studies_using_them(
    service: tuple[str, str], browser: Browser
) -> None:
    import io

    import httpx
    import numpy as np

    url, token = service
    buf = io.BytesIO()
    rng = np.random.default_rng(0)
    np.savez(buf, x_train=rng.normal(size=(60, 5)).astype(np.float32), y_train=rng.integers(0, 4, 60))
    auth = {"Authorization": f"Bearer {token}"}
    ds = httpx.post(
        f"{url}/api/v1/datasets",
        params={"name": "team.npz"},
        content=buf.getvalue(),
        headers=auth,
        timeout=120,
    )
    assert ds.status_code in (200, 201), ds.text
    ref = ds.json()["ref"]
    with Client(url, token) as c:
        study = c.create_study("on-team-data", dataset=ref)
    page, errors = new_page(browser)
    page.goto(url + "/")
    page.fill("#token", token)
    page.click("button[type=submit]")
    link = page.locator(f"#studies tr[data-study='{study.id}'] a[data-dataset-ref='{ref}']")
    expect(link).to_be_visible()
    link.click()
    row = page.locator(f"#datasets tr[data-dataset='{ds.json()['id']}']")
    expect(row).to_contain_text("team.npz")
    expect(row).to_contain_text("4 classes")
    expect(row).to_contain_text("[5]")
    expect(row.locator(f"a[href='#/studies/{study.id}']")).to_have_text("on-team-data")
    shot(page, "datasets")
    assert errors == []
    page.close()


def test_an_asha_search_shows_stopped_runs_and_their_rung(service: tuple[str, str], browser: Browser) -> None:
    """3 trials, η = 3, rungs 1 and 3 epochs: the best after 1 epoch goes on to 3 (succeeded), the
    other two are stopped at 1 epoch; the candidate table says so (badge and rung)."""
    url, token = service
    space = (ROOT / "examples/spaces/mlp_space.yaml").read_text()
    with Client(url, token) as c:
        study = c.create_search(
            "browser-asha",
            dataset="digits",
            space=space,
            search={"trials": 3, "parallel": 1, "seed": 2, "asha": {"reduction_factor": 3}},
            screening={
                "max_epochs": 3,
                "patience": 50,
                "batch_size": 64,
                "base": "sgd",
                "max_steps_per_epoch": 5,
            },
            policy={"auto": False},
        )
    page, errors = new_page(browser)
    page.goto(url + "/")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.click(f"#studies a[href='#/studies/{study.id}']")
    stopped = page.locator("#candidates tbody tr[data-state='stopped']")
    expect(stopped).to_have_count(2, timeout=240_000)
    expect(page.locator("#candidates tbody tr[data-state='succeeded']")).to_have_count(1)
    expect(stopped.first.locator(".badge.stopped")).to_have_text("stopped")
    expect(stopped.first.locator(".rung")).to_have_text("stopped at 1 ep")
    done = page.locator("#candidates tbody tr[data-state='succeeded'] .rung")
    expect(done).to_have_attribute("data-rung-epochs", "3")
    shot(page, "asha-search")
    assert not errors, errors

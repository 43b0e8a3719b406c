"""`archscreen search`: a search study through the API, a real worker and the typed client."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from archscreen.client import Client
from tests.services import RunningService, service_backend

SPACE = Path(__file__).parents[2] / "examples/spaces/mlp_space.yaml"


@pytest.fixture(params=["sqlite+filesystem"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningService]:
    yield from service_backend(request, tmp_path)


def test_a_missing_space_file_is_one_line_and_a_usage_exit(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "archscreen", "search", str(tmp_path / "nope.yaml"), "--dataset", "digits"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "nope.yaml: no such file" in out.stderr


@pytest.mark.slow
def test_search_command_searches_and_promotes(service: RunningService) -> None:
    service.start_api()
    service.start_worker(concurrency=1)
    service.wait_ready()
    args = ["--server", service.url, "--token", service.token]  # type: ignore[attr-defined]
    common = ["search", str(SPACE), "--dataset", "digits", "--max-epochs", "1", "--seed", "0", *args]
    bad = service.cli(*common, "--trials", "0", check=False)
    assert bad.returncode != 0 and "search.trials" in bad.stderr  # type: ignore[attr-defined]
    bad = service.cli(*common, "--trials", "3", "--min-epochs", "2", check=False)  # first rung > max_epochs 1
    assert bad.returncode != 0 and "search.asha.min_epochs" in bad.stderr  # type: ignore[attr-defined]
    assert len(bad.stderr.strip().splitlines()) == 1  # type: ignore[attr-defined]
    out = service.cli(*common, "--trials", "3", "--parallel", "1", "--name", "cli-search", "--wait")
    assert "best: val_loss" in out.stdout, out  # type: ignore[attr-defined]
    assert "trials asked 3/3, told 3, running 0" in out.stdout  # type: ignore[attr-defined]
    assert out.stderr.count("trials asked") >= 2  # type: ignore[attr-defined]  # progress as it went
    status = service.cli("status", "cli-search", *args).stdout  # type: ignore[attr-defined]
    assert "search (tpe, val_loss): trials asked 3/3, told 3, running 0" in status, status
    assert "best: val_loss" in status and "CPU-seconds" in status
    with Client(service.url, service.token) as c:  # type: ignore[attr-defined]
        study = c.study_by_name("cli-search")
        assert study is not None
        assert study.search is not None and study.search.asked == study.search.told == 3
        assert study.search.best_params and study.search.best_value is not None
        assert study.search.cpu_seconds > 0 and c.summary(study.id).cpu_seconds >= study.search.cpu_seconds
        deadline = time.monotonic() + 30
        while not c.study(study.id).auto_promoted:
            assert time.monotonic() < deadline, service.logs()
            time.sleep(0.5)
    # a budget and no trial count: the budget ends the search (the count is the budgeted limit)
    out = service.cli(*common, "--budget", "2", "--parallel", "1", "--name", "cli-budget", "--wait")
    assert "searching 10000 trials of mlp_space.yaml (or until 2 CPU-seconds)" in out.stdout, out  # type: ignore[attr-defined]
    with Client(service.url, service.token) as c:  # type: ignore[attr-defined]
        budgeted = c.study_by_name("cli-budget")
        assert budgeted is not None and budgeted.search is not None
        s = budgeted.search
        assert 1 <= s.told == s.asked < 10_000 and s.running == 0 and s.cpu_seconds >= 2, s


@pytest.mark.slow
def test_client_search_method_waits_for_the_search(service: RunningService) -> None:
    from archscreen.client import ApiError

    service.start_api()
    service.start_worker(concurrency=1)
    service.wait_ready()
    with Client(service.url, service.token) as c:  # type: ignore[attr-defined]
        with pytest.raises(ApiError) as refused:  # the mlp space has a continuous dropout rate
            c.search(SPACE, dataset="digits", trials=4, sampler="grid")
        assert refused.value.status == 422 and "search.sampler" in str(refused.value)
        seen: list[int] = []
        study = c.search(
            SPACE,
            dataset="digits",
            trials=2,
            parallel=2,
            sampler="nsga2",
            seed=0,
            screening={"max_epochs": 1},
            name="client-search",
            wait=True,
            timeout=180,
            on_update=lambda s: seen.append(s.told),
        )
        assert study.name == "client-search" and study.search is not None
        assert study.search.objectives == ["val_loss", "params"]
        assert study.search.told == 2 and study.search.running == 0 and seen[-1] == 2

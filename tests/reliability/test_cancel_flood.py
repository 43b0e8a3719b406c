"""Cancelling many candidates through the API does not flood the queue (issue 25, item 1).

A cancel sends a promotion check only where it can promote (``policy.auto`` on, the study's
screening over, not promoted yet), at most once per study, and a worker handles that control
message in its main process, without a job process.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services import BACKENDS, RunningService, service_backend

pytestmark = pytest.mark.slow

N = 100
QUICK = {"max_epochs": 1, "max_steps_per_epoch": 2, "patience": 5}


@pytest.fixture(params=BACKENDS)
def svc(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningService]:
    yield from service_backend(request, tmp_path)


def _study(client: httpx.Client, name: str, auto: bool) -> int:
    r = client.post(
        "/api/v1/studies",
        json={"name": name, "dataset": "digits", "screening": QUICK, "policy": {"auto": auto}},
    )
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _candidates(client: httpx.Client, study_id: int, count: int, offset: int = 0) -> list[int]:
    specs: list[dict[str, Any]] = [
        {"spec": {"name": f"m{i}", "layers": ["flatten", {"linear": 4 + i}, "relu"], "head": "classifier"}}
        for i in range(offset, offset + count)
    ]
    r = client.post(f"/api/v1/studies/{study_id}/candidates", json=specs, timeout=120)
    assert r.status_code == 201, r.text
    return [int(c["id"]) for c in r.json()["data"]]


def _cancel_all(client: httpx.Client, candidate_ids: list[int]) -> None:
    for cid in candidate_ids:
        r = client.post(f"/api/v1/candidates/{cid}/cancel")
        assert r.status_code == 202, r.text


def test_cancelling_100_candidates_does_not_hold_up_a_new_job(svc: RunningService, tmp_path: Path) -> None:
    svc.start_api()
    svc.wait_healthy()
    with httpx.Client(base_url=svc.url, headers={"Authorization": f"Bearer {svc.token}"}, timeout=30) as c:
        manual = _study(c, "manual", auto=False)
        _cancel_all(c, _candidates(c, manual, N))
        # an auto study whose every candidate is cancelled (twice): one promotion check, no more
        auto = _study(c, "auto", auto=True)
        auto_candidates = _candidates(c, auto, 3)
        _cancel_all(c, auto_candidates)
        _cancel_all(c, auto_candidates)

        svc.start_worker("worker", concurrency=1)
        svc.wait_ready()
        other = _study(c, "other", auto=False)
        t0 = time.monotonic()
        fresh = _candidates(c, other, 1, offset=N)[0]
        deadline = t0 + 30
        while c.get(f"/api/v1/candidates/{fresh}").json()["state"] not in ("running", "succeeded"):
            assert time.monotonic() < deadline, f"the new job did not start in 30 s\n{svc.logs()}"
            time.sleep(0.05)
        started_s = time.monotonic() - t0
        print(f"new job started {started_s:.2f} s after its POST, behind {N + 3} cancelled candidates")
        # the goal is 2 s (docs/reliability.md gives the figures); the bound is generous for a loaded
        # CI box, and far below the 75 s that 100 promotion checks cost one job process each
        assert started_s < 10, f"the new job started after {started_s:.1f} s\n{svc.logs()}"

        deadline = time.monotonic() + 30
        while not c.get(f"/api/v1/studies/{auto}").json()["auto_promoted"]:
            assert time.monotonic() < deadline, f"the auto study's check never ran\n{svc.logs()}"
            time.sleep(0.1)
    log = (tmp_path / "worker.log").read_text()
    # the manual study sent none; the auto study one, handled by the worker's main process
    assert len(re.findall(r"archscreen\.promotion_check\[\S+\] received", log)) == 1, log[-4000:]
    assert "ForkPoolWorker-1] Task archscreen.promotion_check" not in log, log[-4000:]
    assert log.count("promotion check for study") == 1, log[-4000:]

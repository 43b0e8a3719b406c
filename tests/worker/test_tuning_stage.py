"""The tuning stage's options through the service (real API and worker processes): a study whose
policy says ``tuning_start: screen-weights`` (the default) gets one tuning job per candidate that
starts from its screening run's weights; with ``halving`` that job spends the quartile starts by
successive halving.

One backend: the option is read by worker/promotion.py and worker/runner.py, whose code is the
same on both (the PostgreSQL + Redis path of promotion and tuning jobs is covered by
tests/worker/test_end_to_end.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from archscreen.client import Client
from tests.services import RunningService, service_backend

pytestmark = pytest.mark.slow

SPECS = [
    {"name": "mlp", "layers": ["flatten", {"linear": 32}, "relu"], "head": "classifier"},
    {"name": "logreg", "layers": ["flatten"], "head": "classifier"},
]


@pytest.fixture(params=["sqlite+filesystem"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningService]:
    yield from service_backend(request, tmp_path)


@pytest.mark.parametrize("halving", [False, True])
def test_screen_weights_is_one_job_from_the_screening_weights(service: RunningService, halving: bool) -> None:
    service.start_api()
    service.start_worker(concurrency=2)
    service.wait_ready()
    with Client(service.url, service.token) as c:
        study = c.create_study(
            "stage",
            dataset="mnist1d",
            screening={"max_epochs": 3, "patience": 3, "batch_size": 64},
            policy={"top_k": 1, "auto": True, "tuning_start": "screen-weights", "halving": halving},
        )
        assert study.policy.tuning_start == "screen-weights" and study.policy.halving == halving
        c.add_candidates(study.id, [{"spec": s} for s in SPECS])
        c.wait(study.id, timeout=240, poll_s=0.5)
        deadline, jobs = time.monotonic() + 240, []
        while time.monotonic() < deadline:
            jobs = c.tuning_jobs(study.id)
            if jobs and all(j.state in ("succeeded", "failed") for j in jobs):
                break
            time.sleep(0.5)
        assert len(jobs) == 1, service.logs()
        job = c.tuning_job(jobs[0].id)
        assert job.state == "succeeded", f"{job.error}\n{service.logs()}"
        if halving:
            assert job.start == "screen-weights+halving"
            halving_out = job.result["halving"]
            assert len(halving_out["rates"]) == 3 and halving_out["rungs"] == [1, 3]
            assert job.result["init_lr"] == pytest.approx(halving_out["rates"][halving_out["chosen"]])
            assert job.result["epochs"] == 3  # the chosen start trained to the cap
            assert sum(len(v) for v in halving_out["values"]) == 4  # 3 starts at rung 1, one at rung 3
            # epoch rows: rung 1's by the starts (the later start's row wins), then the chosen one's
            assert [p.epoch for p in job.curves] == [1, 2, 3]
            assert [p.extra["start"] for p in job.curves][1:] == [halving_out["chosen"]] * 2
        else:
            assert job.start == "screen-weights" and "halving" not in job.result
            assert job.result["init_lr"] == pytest.approx(job.init_lr)
            assert [p.epoch for p in job.curves] == list(range(1, job.result["epochs"] + 1))
        # the best screening run's weights were kept for it, and nothing of the halving is left
        top = c.ranking(study.id).data[0].candidate_id
        assert job.candidate_id == top
        data = service.tmp / "data"
        kept = list(data.rglob("screen_weights.pt"))
        assert kept, "the screening runs of a screen-weights study keep their weights"
        weights = torch.load(kept[0], weights_only=True)
        assert weights["head.weight"].shape[0] == 10  # the Alrao model's copies
        assert not list(data.rglob("halving/start-*.pt"))
        board = c.leaderboard(study.id)
        assert board.best.tuning_job_id == job.id and board.best.recommended_lr > 0

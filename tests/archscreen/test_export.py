"""``archscreen export STUDY -o best.pt`` against a real ``archscreen api`` + ``archscreen worker``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from archscreen.api.schemas import JobOut, LeaderboardOut, LeaderboardRow
from archscreen.client import FINAL, Client
from archscreen.remote_cli import best_tuning_job
from tests.services import RunningService

SPECS = [
    {"name": "mlp8", "layers": ["flatten", {"linear": 8}, "relu"], "head": "classifier"},
    {"name": "mlp24", "layers": ["flatten", {"linear": 24}, "relu"], "head": "classifier"},
]
SCREENING = {"max_epochs": 1, "patience": 1, "batch_size": 64, "seeds": [0], "max_steps_per_epoch": 30}


def cli(svc: RunningService, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**svc.env, "ARCHSCREEN_SERVER": svc.url, "ARCHSCREEN_TOKEN": svc.token}
    return subprocess.run(
        [sys.executable, "-m", "archscreen", *args], env=env, capture_output=True, text=True, timeout=180
    )


def one_error_line(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode != 0 and p.stdout == "", (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    return lines[0]


@pytest.mark.slow
def test_export_writes_the_best_tuning_jobs_model(tmp_path: Path) -> None:
    t0 = time.monotonic()
    svc = RunningService(tmp_path, f"sqlite:///{tmp_path / 'data' / 'archscreen.db'}", None)
    svc.cli("migrate")
    svc.token = svc.cli("token", "create", "--tenant", "cli").stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
    svc.start_api()
    try:
        svc.wait_healthy()
        with Client(svc.url, svc.token) as c:
            study = c.create_study(
                # one candidate's two starts: the export's answer is the better start by validation
                "exp",
                dataset="mnist1d",
                screening=SCREENING,
                policy={"top_k": 1, "auto": True, "starts": 2, "tuning_start": "multi"},
            )
            c.add_candidates(study.id, [{"spec": s} for s in SPECS])
            # no worker yet: nothing is screened, so nothing is tuned
            assert "no tuning job has succeeded yet" in one_error_line(cli(svc, "export", "exp"))
            assert "no study named 'nope'" in one_error_line(cli(svc, "export", "nope"))

            svc.start_worker(concurrency=2)
            deadline = time.monotonic() + 150
            while not (
                (jobs := c.tuning_jobs(study.id)) and len(jobs) == 2 and all(j.state in FINAL for j in jobs)
            ):
                assert time.monotonic() < deadline, svc.logs()
                time.sleep(0.3)
            assert [j.state for j in jobs] == ["succeeded"] * 2, svc.logs()
            board = c.leaderboard(study.id)
            reference = c.download_model(jobs[0].id, tmp_path / "via-client.pt")

        out = tmp_path / "best.pt"
        p = cli(svc, "export", "exp", "-o", str(out))
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == str(out) and "tuning job" in p.stderr and "bytes" in p.stderr
        f = torch.load(out, weights_only=True)
        best = next(j for j in jobs if j.id == f["job_id"])
        # the study's answer is the leaderboard's best tuned candidate, its start with the lower val loss
        assert best.candidate_id == board.best.candidate_id
        assert best.id == board.best.tuning_job_id and {j.start for j in jobs} == {"p50", "p25"}
        assert f["metrics"]["val_loss"] == pytest.approx(min(j.result["val_loss"] for j in jobs))

        # --job picks one; its bytes are what the API serves
        p = cli(svc, "export", str(study.id), "--job", str(jobs[0].id), "-o", str(tmp_path / "j.pt"))
        assert p.returncode == 0, p.stderr
        assert (tmp_path / "j.pt").read_bytes() == Path(reference.path).read_bytes()
        assert torch.load(tmp_path / "j.pt", weights_only=True)["job_id"] == jobs[0].id

        assert "has no tuning job 99999" in one_error_line(cli(svc, "export", "exp", "--job", "99999"))
        nowhere = tmp_path / "missing-dir" / "m.pt"
        assert "cannot write" in one_error_line(cli(svc, "export", "exp", "-o", str(nowhere)))
        assert not nowhere.parent.exists()
        print(f"\nexport test {time.monotonic() - t0:.1f} s")
    finally:
        svc.stop()


def test_export_help_says_what_the_file_is() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "archscreen", "export", "--help"], capture_output=True, text=True, timeout=60
    )
    assert p.returncode == 0
    text = " ".join(p.stdout.split())
    assert "--job ID" in text and "-o PATH" in text and "weights_only=True" in text


def job(i: int, state: str, **result: Any) -> JobOut:
    return JobOut.model_construct(id=i, state=state, result=result or None)


def leaderboard_with(best: dict[str, Any] | None) -> LeaderboardOut:
    """A leaderboard with only its best row's fields the export reads."""
    return LeaderboardOut.model_construct(
        best=None if best is None else LeaderboardRow.model_construct(**best)
    )


def test_the_export_takes_the_job_the_leaderboard_names_not_its_own_pick() -> None:
    jobs = [
        job(1, "succeeded", val_loss=0.2),
        job(2, "succeeded", val_loss=0.5),
        job(3, "failed"),
    ]
    # the server's answer (each candidate's best start by validation, then the best candidate on the
    # study's metric), even where this list alone would suggest another job
    assert best_tuning_job(leaderboard_with({"tuning_job_id": 2, "tuned_score": 0.5}), jobs).id == 2  # type: ignore[union-attr]
    # nothing tuned yet (the best row is a screened one), no best row, or a job that has not succeeded
    assert best_tuning_job(leaderboard_with({"tuning_job_id": 2, "tuned_score": None}), jobs) is None
    assert best_tuning_job(leaderboard_with(None), jobs) is None
    assert best_tuning_job(leaderboard_with({"tuning_job_id": 3, "tuned_score": 0.1}), jobs) is None

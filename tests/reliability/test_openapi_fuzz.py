"""schemathesis, every check, against a real ``archscreen api`` with a study, screened candidates and
a tuning job in place: the OpenAPI schema states what the API does (statuses, bodies, Allow headers,
auth) and no generated request gets a 5xx. Bounded: 25 examples per operation, a fixed seed."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.services import BACKENDS, RunningService, service_backend

pytestmark = pytest.mark.slow

CONFIG = Path(__file__).with_name("schemathesis.toml")
QUICK = {"max_epochs": 1, "max_steps_per_epoch": 2}
SPECS = [
    {"spec": {"name": "logreg", "layers": ["flatten"], "head": "classifier"}},
    {"spec": {"name": "mlp", "layers": ["flatten", {"linear": 8}, "relu"], "head": "classifier"}},
]


# The production path (PostgreSQL + Redis) only: SQLite's own hostile inputs are covered by
# test_hostile_input.py, and one run of the fuzzer costs a minute of CI.
@pytest.fixture(params=[b for b in BACKENDS if b.startswith("postgresql")])
def populated(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[RunningService, dict[str, int]]]:
    """A study whose two candidates were screened by a real worker (stopped before the fuzzing, so
    fuzzed submissions stay queued), and a tuning job promoted from it."""
    for svc in service_backend(request, tmp_path):
        svc.start_api()
        svc.start_worker(concurrency=1)
        svc.wait_ready()
        auth = {"Authorization": f"Bearer {svc.token}"}
        study = httpx.post(
            f"{svc.url}/api/v1/studies",
            json={"name": "fuzz", "dataset": "mnist1d", "screening": QUICK},
            headers=auth,
            timeout=60,  # the first study imports the dataset registry (torch): slow on a loaded host
        ).json()
        cands = httpx.post(f"{svc.url}/api/v1/studies/{study['id']}/candidates", json=SPECS, headers=auth)
        assert cands.status_code == 201, cands.text
        deadline = time.monotonic() + 180
        while httpx.get(f"{svc.url}/api/v1/studies/{study['id']}", headers=auth).json()["jobs_by_state"] != {
            "succeeded": 2
        }:
            assert time.monotonic() < deadline, svc.logs()
            time.sleep(1)
        import signal

        svc.kill("worker", signal.SIGTERM)
        promoted = httpx.post(
            f"{svc.url}/api/v1/studies/{study['id']}/promote", json={"top_k": 1}, headers=auth
        )
        assert promoted.status_code == 201, promoted.text
        ids = {
            "study_id": study["id"],
            "candidate_id": cands.json()["data"][0]["id"],
            "job_id": promoted.json()["data"][0]["id"],
        }
        yield svc, ids


def schemathesis(config: Path, url: str, token: str, mode: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(Path(sys.executable).with_name("schemathesis")),
            "--no-color",
            "--config-file",
            str(config),
            "run",
            f"{url}/openapi.json",
            "--checks",
            "all",
            "--mode",
            mode,
            "--seed",
            "1",
        ],
        env={"ST_TOKEN": token, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_schemathesis_every_check_passes(
    populated: tuple[RunningService, dict[str, int]], tmp_path: Path
) -> None:
    svc, ids = populated
    wide = schemathesis(CONFIG, svc.url, svc.token, "all")
    assert wide.returncode == 0, wide.stdout[-6000:]
    deep_config = tmp_path / "deep.toml"
    deep_config.write_text(
        CONFIG.read_text() + "\n[parameters]\n" + "".join(f'"path.{k}" = {v}\n' for k, v in ids.items())
    )
    deep = schemathesis(deep_config, svc.url, svc.token, "positive")
    assert deep.returncode == 0, deep.stdout[-6000:]
    for run in (wide, deep):
        assert " passed" in run.stdout and "failures" not in run.stdout.lower().split("summary")[-1], (
            run.stdout[-3000:]
        )
    assert "Traceback" not in (svc.tmp / "api.log").read_text()

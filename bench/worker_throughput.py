"""Tiny screening jobs through real workers: seconds per job per worker, on both backends.

Starts `archscreen api` and 2 `archscreen worker` processes (concurrency 1 each) on SQLite + the
filesystem broker, then on PostgreSQL + Redis, submits --jobs candidates of a few steps each on
digits, and reports wall time per job per worker: the per-job overhead of the service (claim,
fork, dataset, Alrao set-up, epoch writes), since the training itself is a few steps. Last line:
``redis_s_per_job: X``.

    .venv/bin/python bench/worker_throughput.py [--jobs 30]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.services import REDIS_URL, RunningService, fresh_postgres_url  # noqa: E402


def run(backend: str, jobs: int) -> float:
    with tempfile.TemporaryDirectory(prefix="archscreen-bench-") as name:
        tmp = Path(name)
        gen = fresh_postgres_url() if backend == "postgresql+redis" else None
        db = next(gen) if gen else f"sqlite:///{tmp / 'data' / 'archscreen.db'}"
        svc = RunningService(tmp, db, REDIS_URL if gen else None)
        try:
            svc.cli("migrate")
            svc.token = svc.cli("token", "create", "--tenant", "b").stdout.strip().splitlines()[-1]
            svc.start_api()
            svc.start_worker("w1", concurrency=1)
            svc.start_worker("w2", concurrency=1)
            svc.wait_ready()
            auth = {"Authorization": f"Bearer {svc.token}"}
            screening = {"max_epochs": 2, "max_steps_per_epoch": 2, "patience": 5}
            study = httpx.post(
                f"{svc.url}/api/v1/studies",
                json={"name": "t", "dataset": "digits", "screening": screening},
                headers=auth,
            ).json()
            specs = [
                {
                    "spec": {
                        "name": f"m{i}",
                        "layers": ["flatten", {"linear": 4 + i}, "relu"],
                        "head": "classifier",
                    }
                }
                for i in range(jobs)
            ]
            t0 = time.perf_counter()
            httpx.post(
                f"{svc.url}/api/v1/studies/{study['id']}/candidates", json=specs, headers=auth, timeout=60
            )
            url = f"{svc.url}/api/v1/studies/{study['id']}"
            while httpx.get(url, headers=auth).json()["jobs_by_state"].get("succeeded", 0) < jobs:
                time.sleep(0.2)
            return (time.perf_counter() - t0) / jobs * 2
        finally:
            svc.stop()
            if gen is not None:
                with contextlib.suppress(StopIteration):
                    next(gen)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=30)
    args = ap.parse_args()
    figures = {}
    for backend in ("sqlite+filesystem", "postgresql+redis"):
        figures[backend] = run(backend, args.jobs)
        print(f"{backend}: {figures[backend]:.2f} s per job per worker ({args.jobs} jobs, 2 workers)")
    print(f"redis_s_per_job: {figures['postgresql+redis']:.2f}")


if __name__ == "__main__":
    main()

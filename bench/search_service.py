"""A search through the real service, timed as a user would time it (issue 29's goal: a 50-trial
search of the MLP space on digits finishes on the 2-core machine in under 10 minutes, through
``archscreen up``).

Starts ``archscreen up`` (embedded SQLite + the file broker, ``--workers`` worker processes) in a
fresh data folder, runs ``archscreen search SPACE --dataset D --trials N --wait`` as a child
process (the CLI a user types), then waits for the automatic promotion's tuning jobs (the tuned
model). Prints the wall time of each part, the epochs the screening runs trained against one
full run each (ASHA's saving, from the jobs the API lists), and the last line
``search_service_s: S``: upload of nothing (a built-in dataset) to a tuned model, in seconds.

    python bench/search_service.py [--trials 50] [--space examples/spaces/mlp_space.yaml] [--dataset digits]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from pipeline import running_service, wait_for_tuning  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--space", default=str(ROOT / "examples" / "spaces" / "mlp_space.yaml"))
    p.add_argument("--dataset", default="digits")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=3600)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_service(args.workers, Path(tmp)) as client:
        exe = Path(sys.executable).with_name("archscreen")
        cmd = [str(exe), "search", args.space, "--dataset", args.dataset, "--trials", str(args.trials),
               "--parallel", str(args.parallel), "--seed", str(args.seed), "--wait",
               "--server", client.base_url, "--data-dir", tmp]  # fmt: skip
        t0 = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=dict(os.environ))
        t_search = time.perf_counter() - t0
        if out.returncode != 0:
            print(out.stdout, out.stderr, file=sys.stderr)
            return 1
        study_id = int(re.search(r"study (\d+)", out.stdout).group(1))  # type: ignore[union-attr]
        wait_for_tuning(client, study_id, 1, args.timeout)
        t_tuned = time.perf_counter() - t0
        cands = client.candidates(study_id)
        epochs = sum(c.rung_epochs or 0 for c in cands)
        cap = client.study(study_id).screening.max_epochs
        print(out.stdout.strip())
        print(f"search (every trial told): {t_search:.0f} s wall; to the tuned model: {t_tuned:.0f} s wall")
        print(
            f"screening epochs (rungs reached): {epochs} for {len(cands)} candidates; "
            f"one full run each: {len(cands)} x {cap}"
        )
    print(f"search_service_s: {t_tuned:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

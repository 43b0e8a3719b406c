"""Screening candidates per hour on one device with K job processes sharing it (issue 20, GPU part).

A mixed queue of the example specs (``examples/*.yaml``, each on the dataset its first line names)
is screened at each K of ``--ks``, with CUDA graphs off and on (``ARCHSCREEN_CUDA_GRAPHS``). Per
(K, graphs) a fresh data dir: SQLite, one study per dataset, the candidates posted through the
real API app (validation as users get it). Then the worker's own path runs the queue: K slots,
each job in a fresh forked process (as the worker's prefork pool with one task per child does, with
torch and the training code imported before forking) calling
:func:`archscreen.worker.runner.execute` (claim, lease, dataset, memory share, Alrao screening,
per-epoch writes), with ``ARCHSCREEN_PINNED_GPU`` and ``jobs_per_gpu = K`` as a ``--gpus
--jobs-per-gpu K`` worker sets them. No Celery broker: its per-job overhead is
``bench/worker_throughput.py``'s figure, the same at every K.

Reported per row: screening runs per hour (a run is one candidate x seed; a study's default is
one seed, so runs are candidates): succeeded jobs / wall time from the first fork to the last exit;
the ratio to K = 1 without graphs; failed jobs (a job over its 1/K memory share fails with its
stored reason); and each spec's epoch time (median over its jobs' epochs after the first, and the
first epoch, which carries any compile time), so the cost of sharing shows next to the gain.

On the CPU (``--device cpu``, the default when no GPU is visible) K processes share the cores
(each gets cores / K torch threads, as the worker's job processes do) and the graphs rows are
skipped: the switch is a no-op there. Last line: ``gpu_throughput_speedup_k_best: X``, the best
row's candidates per hour over K = 1 without graphs.

    .venv/bin/python bench/gpu_throughput.py --device cuda --ks 1,2,4,8       # the GPU run
    .venv/bin/python bench/gpu_throughput.py --device cpu --ks 1,2,4 --seeds 2 \\
        --epochs 2 --steps-per-epoch 20 --rounds 2                             # a short CPU run
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.connection
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

# what the worker's main process imports before it forks job processes (worker/tasks.py)
import torch._dynamo  # noqa: E402
import yaml  # noqa: E402
from sqlalchemy import select  # noqa: E402

import archscreen.core.screening  # noqa: E402
import archscreen.core.training.loop  # noqa: E402, F401
from archscreen.settings import Settings  # noqa: E402
from archscreen.store import Database, Job  # noqa: E402
from archscreen.store.models import Candidate, EpochMetric  # noqa: E402
from archscreen.worker import gpu_share  # noqa: E402
from archscreen.worker.runner import execute  # noqa: E402

SMALL = ["mlp", "lenet5", "logistic_regression", "gru_classifier", "char_lstm", "mlp_regression"]


def example_specs(names: list[str]) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, dataset, spec) of each example, the dataset read from its ``# dataset: X`` line."""
    out = []
    for name in names:
        path = ROOT / "examples" / f"{name}.yaml"
        if not path.exists():
            raise SystemExit(f"--specs: no example {name!r} (examples/{name}.yaml)")
        text = path.read_text()
        first = text.splitlines()[0]
        if not first.startswith("# dataset:"):
            raise SystemExit(f"examples/{name}.yaml: its first line must name its dataset")
        out.append((name, first.split(":", 1)[1].strip(), yaml.safe_load(text)))
    return out


@dataclass
class Row:
    k: int
    graphs: bool
    jobs: int
    succeeded: int
    wall_s: float
    failures: list[str] = field(default_factory=list)
    epoch_s: dict[str, float] = field(default_factory=dict)  # spec -> median epoch after the first
    first_epoch_s: dict[str, float] = field(default_factory=dict)

    @property
    def per_hour(self) -> float:
        return self.succeeded / self.wall_s * 3600


def _prepare(data_dir: Path, specs: list[tuple[str, str, dict[str, Any]]], screening: dict[str, Any]) -> None:
    """Migrate, then post one study per dataset and its candidates through the API app.

    One candidate per spec and one job per seed of ``screening["seeds"]`` (a study refuses the
    same spec twice): the queue is specs x seeds screening runs.
    """
    from fastapi.testclient import TestClient

    from archscreen.api.app import create_app
    from archscreen.store.auth import create_token

    settings = Settings(data_dir=data_dir)
    settings.ensure_dirs()
    db = Database(settings.resolved_database_url)
    db.migrate()
    with db.session() as s:
        token = create_token(s, "bench", "gpu_throughput")
    db.dispose()
    auth = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(settings)) as client:
        for dataset in dict.fromkeys(d for _, d, _ in specs):
            r = client.post(
                "/api/v1/studies",
                json={"name": f"bench-{dataset}", "dataset": dataset, "screening": screening},
                headers=auth,
            )
            r.raise_for_status()
            body = [{"name": name, "spec": spec} for name, d, spec in specs if d == dataset]
            client.post(
                f"/api/v1/studies/{r.json()['id']}/candidates", json=body, headers=auth
            ).raise_for_status()


def _job_process(settings: Settings, job_id: int, gpu: str, threads: int) -> None:
    """One job in a fresh process, as a ``--gpus <gpu> --jobs-per-gpu K`` worker's job process runs it."""
    os.environ[gpu_share.PINNED_GPU_ENV] = gpu
    torch.set_num_threads(threads)
    db = Database(settings.resolved_database_url)
    try:
        execute(db, settings, job_id)
    finally:
        db.dispose()


def _warm_datasets(datasets: list[str]) -> None:
    """Generate/download each dataset once (its disk cache), in a throwaway process."""
    code = "import sys\nfrom archscreen.core.data import load_dataset\n"
    code += "for d in sys.argv[1:]: load_dataset(d, seed=0)"
    subprocess.run([sys.executable, "-c", code, *datasets], check=True, cwd=ROOT)


def run_row(
    k: int,
    graphs: bool,
    specs: list[tuple[str, str, dict[str, Any]]],
    screening: dict[str, Any],
    device: str,
    gpu: str,
    threads: int | None,
) -> Row:
    ctx = multiprocessing.get_context("fork")
    with tempfile.TemporaryDirectory(prefix="archscreen-gpu-bench-") as tmp:
        data_dir = Path(tmp)
        _prepare(data_dir, specs, screening)
        settings = Settings(
            data_dir=data_dir,
            device=device,
            jobs_per_gpu=k,
            cuda_graphs=graphs,
            heartbeat_s=2.0,
            delete_checkpoint_on_success=True,
        )
        db = Database(settings.resolved_database_url)
        with db.session() as s:
            # mixed: every spec's seed 0, then every spec's seed 1, ...
            pending = list(s.scalars(select(Job.id).where(Job.state == "queued").order_by(Job.seed, Job.id)))
        db.dispose()  # never share a connection with the forked job processes
        running: dict[Any, Any] = {}
        t0 = time.perf_counter()
        while pending or running:
            while pending and len(running) < k:
                # as the worker's job processes: cores / K torch threads unless --threads says
                n = threads or max(1, (os.cpu_count() or 1) // k)
                proc = ctx.Process(target=_job_process, args=(settings, pending.pop(0), gpu, n))
                proc.start()
                running[proc.sentinel] = proc
            for sentinel in multiprocessing.connection.wait(list(running)):
                running.pop(sentinel).join()
        wall = time.perf_counter() - t0
        db = Database(settings.resolved_database_url)
        with db.session() as s:
            jobs = s.execute(select(Job.id, Job.state, Job.error).where(Job.kind == "screen")).all()
            names = {
                job_id: name
                for job_id, name in s.execute(
                    select(Job.id, Candidate.name).join(Candidate, Job.candidate_id == Candidate.id)
                )
            }
            metrics = s.execute(select(EpochMetric.job_id, EpochMetric.epoch, EpochMetric.seconds)).all()
        db.dispose()
    row = Row(
        k=k,
        graphs=graphs,
        jobs=len(jobs),
        succeeded=sum(j.state == "succeeded" for j in jobs),
        wall_s=wall,
        failures=[f"job {j.id} ({names[j.id]}): {j.error}" for j in jobs if j.state != "succeeded"],
    )
    later: dict[str, list[float]] = {}
    first: dict[str, list[float]] = {}
    for m in metrics:
        (first if m.epoch == 1 else later).setdefault(names[m.job_id], []).append(m.seconds)
    row.epoch_s = {n: statistics.median(v) for n, v in later.items()}
    row.first_epoch_s = {n: statistics.median(v) for n, v in first.items()}
    return row


def cuda_visible() -> int:
    """CUDA devices, asked in a throwaway process: CUDA must not be initialised before forking."""
    out = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip() or 0)


def parse_ks(text: str) -> list[int]:
    try:
        ks = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 1,2,4, got {text!r}"
        ) from None
    if not ks or any(not 1 <= k <= gpu_share.JOBS_PER_GPU_MAX for k in ks):
        raise argparse.ArgumentTypeError(
            f"each K must be from 1 to {gpu_share.JOBS_PER_GPU_MAX}, got {text!r}"
        )
    if 1 not in ks:
        raise argparse.ArgumentTypeError("--ks must include 1 (the baseline of the speedup)")
    return sorted(set(ks))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--gpu", default="0", help="the GPU id (CUDA_VISIBLE_DEVICES) on a GPU machine")
    ap.add_argument("--ks", type=parse_ks, default=[1, 2, 4, 8], help="job processes sharing the device")
    ap.add_argument("--graphs", choices=["off", "on", "both"], default="both")
    ap.add_argument("--specs", default=",".join(SMALL), help="example names, mixed in the queue")
    ap.add_argument("--seeds", type=int, default=8, help="screening runs per spec (the queue: specs x seeds)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps-per-epoch", type=int, default=None, help="cap (default: whole epochs)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="torch threads per job (default cores / K)")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run every row this many times, in alternating order; median wall",
    )
    args = ap.parse_args()

    device = args.device
    if device == "auto":
        device = "cuda" if cuda_visible() else "cpu"
    if device == "cuda":
        if not cuda_visible():
            raise SystemExit("--device cuda: no CUDA device is visible")
        os.environ["CUDA_VISIBLE_DEVICES"] = args.gpu  # the job processes see this GPU only
    specs = example_specs([s.strip() for s in args.specs.split(",") if s.strip()])
    screening: dict[str, Any] = {
        "max_epochs": args.epochs,
        "patience": args.epochs,  # every job trains its whole budget: the same work at every K
        "batch_size": args.batch_size,
        "seeds": list(range(args.seeds)),
    }
    if args.steps_per_epoch:
        screening["max_steps_per_epoch"] = args.steps_per_epoch
    graph_modes = {"off": [False], "on": [True], "both": [False, True]}[args.graphs]
    if device == "cpu" and True in graph_modes:
        if args.graphs == "on":
            raise SystemExit("--graphs on needs --device cuda")
        print("# graphs on: skipped, the switch is a no-op on the CPU (CUDA graphs need a CUDA device)")
        graph_modes = [False]
    _warm_datasets(sorted({d for _, d, _ in specs}))
    print(
        f"# device {device}, {os.cpu_count()} cores, torch {torch.__version__}; queue of "
        f"{len(specs) * args.seeds} runs ({args.seeds} seeds of "
        + ", ".join(f"{n} ({d})" for n, d, _ in specs)
        + f"); {args.epochs} epochs, batch {args.batch_size}"
        + (f", at most {args.steps_per_epoch} steps per epoch" if args.steps_per_epoch else "")
        + f"; torch threads per job: {args.threads or 'cores / K'}"
    )
    t_start = time.perf_counter()
    cells = [(k, g) for g in graph_modes for k in args.ks]
    runs: dict[tuple[int, bool], list[Row]] = {c: [] for c in cells}
    for round_ in range(args.rounds):
        for k, graphs in cells if round_ % 2 == 0 else cells[::-1]:
            row = run_row(k, graphs, specs, screening, device, args.gpu, args.threads)
            runs[(k, graphs)].append(row)
            print(
                f"# round {round_ + 1}: K={k} graphs={'on' if graphs else 'off'}: {row.succeeded}/{row.jobs} "
                f"in {row.wall_s:.1f} s (load average {os.getloadavg()[0]:.1f})",
                flush=True,
            )
            for failure in row.failures[:3]:
                print(f"#   failed: {failure}")
    rows = [sorted(runs[c], key=lambda row: row.wall_s)[(len(runs[c]) - 1) // 2] for c in cells]
    base = next(r for r in rows if r.k == 1 and not r.graphs)
    names = [n for n, _, _ in specs]
    print(
        f"{'K':>3} {'graphs':>6} {'ok':>7} {'wall s':>8} {'runs/h':>8} {'vs K=1':>7}  "
        + " ".join(f"{n[:14]:>14}" for n in names)
    )
    for r in rows:
        epochs = " ".join(
            f"{r.epoch_s.get(n, float('nan')):6.2f} [{r.first_epoch_s.get(n, float('nan')):5.2f}]"
            for n in names
        )
        print(
            f"{r.k:>3} {'on' if r.graphs else 'off':>6} {r.succeeded:>3}/{r.jobs:<3} {r.wall_s:8.1f} "
            f"{r.per_hour:8.0f} {r.per_hour / base.per_hour:7.2f}  {epochs}"
        )
    print("# per spec: median epoch s after the first [median first epoch s, with any compile time]")
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"  # after every fork
    print(f"# {name}; median of {args.rounds} round(s); {time.perf_counter() - t_start:.0f} s")
    best = max(rows, key=lambda r: r.per_hour)
    print(f"# best: K={best.k} graphs={'on' if best.graphs else 'off'}")
    print(f"gpu_throughput_speedup_k_best: {best.per_hour / base.per_hour:.2f}")


if __name__ == "__main__":
    main()

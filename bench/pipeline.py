"""The pipeline's answer, end to end: screen → rank → promote → tune, against a full search.

For every dataset of the fidelity suite (``bench/fidelity_suites.py``), this script runs the
**real service** (``archscreen up``: the API, the database, the broker and worker processes, the
code a user runs, never a copy of it): one study per dataset with every architecture of the suite
as a candidate, the screening defaults (Alrao-Adam) on the fidelity study's budget, and the default
promotion policy with ``top_k = --k-max`` and ``auto``, so the service promotes and tunes the top
candidates with its own rule (default tuner, starting rates from the Switch posterior). The bench
only reads the results back over REST.

The answer for ``k`` (1 .. ``--k-max``) is the tuned candidate, among the top ``k`` of the
ranking, with the lowest tuned validation loss (when a candidate has several tuning jobs, e.g.
several starts, its best job by validation loss). Against the **best-of-both truth** cached by
``bench/fidelity.py`` (each architecture's best-rate test score with an SGD or an Adam grid, 2
seeds) it reports, in test-score units (accuracy points; bits per character for ``chartext``):

* **selection regret**: the truth's best test score minus the truth's score of the picked
  architecture (did the pipeline pick the right architecture?);
* **delivered regret**: the truth's best test score minus the test score of what the pipeline
  hands over: the tuning job's own best-epoch weights (``weights``), and, separately, the tuner's
  base optimizer retrained from scratch at the recommended rate (``retrained``, 1 seed, same
  budget);
* **compute**: training steps of the whole pipeline (every screening run plus the top-k's
  tuning runs) over the steps of one learning-rate grid over every architecture in the same
  budget (the Adam grid of the fidelity study, one seed); and over both grids (SGD and Adam).

Every result is one JSON line in ``--cache`` (default ``bench/results/pipeline.jsonl``); a
dataset whose study completed is not run again (resumable), ``--report-only`` analyses the cache.
``--markdown``/``--plot`` write the table and the figure (``docs/pipeline.md`` includes them).

Last line: ``pipeline_delivered_regret_pp: X``: the mean delivered regret (tuning job's weights)
at ``k = 2`` over the classification datasets, in accuracy points.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line
from fidelity import adam_lrs, best_of_both, spec_for, test_score, truth_for
from fidelity_suites import BUDGETS, FULL_SUITES, SGD_LRS

from archscreen.api.schemas import CandidateRow, JobOut
from archscreen.client import FINAL, Client
from archscreen.core.screening import FixedRateScreener
from archscreen.core.training.loop import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
TRUTH_CACHE = ROOT / "docs" / "data" / "fidelity-full.jsonl"
CLASSIFICATION = ("mnist1d", "digits")
FORMAT = 2  # 2: the policy's number of starts and each tuning job's start


# A smoke run (``--smoke``): the first few architectures, two epochs; never mixed with full runs.
SMOKE: dict[str, int] = {}


def suite(dataset: str) -> dict[str, Any]:
    archs = FULL_SUITES[dataset]
    return dict(list(archs.items())[: SMOKE["archs"]]) if SMOKE else archs


def study_config(dataset: str, seeds: int) -> dict[str, Any]:
    """The screening config of the pipeline's study: the product's defaults (Alrao-Adam, its range and
    copies) on the fidelity study's per-dataset budget, with the doubled patience the product's
    default (``patience = 10`` over 20 epochs) implies for a noisy Alrao curve."""
    b = {**BUDGETS[dataset], **({"max_epochs": SMOKE["epochs"]} if SMOKE else {})}
    return {
        "max_epochs": b["max_epochs"],
        "patience": 2 * b["patience"],
        "batch_size": b["batch_size"],
        "seeds": list(range(seeds)),
    }


def config_key(dataset: str, seeds: int, k_max: int, starts: int) -> str:
    blob = json.dumps([FORMAT, dataset, study_config(dataset, seeds), k_max, starts, sorted(suite(dataset))])
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


# ---------------------------------------------------------------- the service


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_service(workers: int, data_dir: Path) -> Iterator[Client]:
    """``archscreen up`` in a child process (embedded SQLite + file broker, ``workers`` worker
    processes), yielding a client with the token it prints; stopped (Ctrl-C semantics) on exit."""
    port = _free_port()
    env = {**os.environ, "ARCHSCREEN_DATA_DIR": str(data_dir)}
    for var in ("ARCHSCREEN_DATABASE_URL", "ARCHSCREEN_BROKER_URL"):
        env.pop(var, None)  # the embedded default unless the caller runs the bench elsewhere
    exe = Path(sys.executable).with_name("archscreen")
    log = (data_dir / "up.log").open("w")
    proc = subprocess.Popen(
        [str(exe), "up", "--port", str(port), "--workers", str(workers), "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
    )
    token = None
    assert proc.stdout is not None
    deadline = time.monotonic() + 180
    while token is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        m = re.search(r"API token \(tenant [^)]*\): (\S+)", line)
        if m:
            token = m.group(1)
    if token is None:
        proc.terminate()
        raise RuntimeError(f"archscreen up did not start; see {data_dir / 'up.log'}")
    client = Client(f"http://127.0.0.1:{port}", token, timeout=60)
    try:
        yield client
    finally:
        client.close()
        proc.send_signal(2)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def wait_for_tuning(client: Client, study_id: int, expected_candidates: int, timeout: float) -> list[JobOut]:
    """Poll until the study's tuning jobs exist for ``expected_candidates`` candidates and all ended."""
    deadline = time.monotonic() + timeout
    while True:
        jobs = client.tuning_jobs(study_id)
        if len({j.candidate_id for j in jobs}) >= expected_candidates and all(j.state in FINAL for j in jobs):
            return jobs
        if time.monotonic() > deadline:
            raise TimeoutError(f"study {study_id}: tuning jobs still running after {timeout:.0f} s")
        time.sleep(2)


def run_dataset(
    client: Client, dataset: str, seeds: int, k_max: int, starts: int, key: str
) -> dict[str, Any]:
    """One study through the service; returns the cache row (screening, ranking, tuning jobs)."""
    study = client.create_study(
        f"pipeline-{dataset}-{key}",
        dataset=dataset,
        screening=study_config(dataset, seeds),
        policy={"top_k": k_max, "auto": True, "starts": starts},
    )
    cands = client.add_candidates(
        study.id,
        [{"spec": spec_for(a, body), "name": a} for a, body in suite(dataset).items()],
        idempotency_key=f"pipeline-{key}",
    )
    names = {c.id: c.name for c in cands}
    bar = tqdm(total=len(cands), desc=f"{dataset}: screening", unit="cand", file=sys.stderr, leave=False)

    def progress(rows: list[CandidateRow]) -> None:
        bar.n = sum(r.state in FINAL for r in rows)
        bar.refresh()

    client.wait(study.id, poll_s=2.0, on_update=progress)
    bar.close()
    ranking = client.ranking(study.id)
    expected = min(k_max, len(ranking.data))
    jobs = wait_for_tuning(client, study.id, expected, timeout=3600)
    screening = {}
    for cid, name in names.items():
        detail = client.candidate(cid)
        screening[name] = {
            "steps": sum((r.result or {}).get("steps", 0) for r in detail.runs),
            "metrics": detail.metrics,
            "preferred_lr": detail.preferred_lr,
            "state": detail.state,
        }
    return {
        "kind": "study",
        "format": FORMAT,
        "dataset": dataset,
        "key": key,
        "budget": study_config(dataset, seeds),
        "k_max": k_max,
        "starts": starts,
        "ranking": [names[r.candidate_id] for r in ranking.data],
        "screening": screening,
        "tuning": [
            {
                "arch": names[j.candidate_id],
                "job_id": j.id,
                "start": j.start,
                "init_lr": j.init_lr,
                "state": j.state,
                "error": j.error,
                "result": {k: v for k, v in (j.result or {}).items() if k not in ("curves", "trajectory")},
            }
            for j in jobs
        ],
    }


def retrain(dataset: str, arch: str, lr: float, optimizer: str, budget: dict[str, Any]) -> dict[str, Any]:
    """The tuner's base optimizer retrained from scratch at the recommended rate (seed 0)."""
    import torch

    torch.set_num_threads(1)
    cfg = TrainConfig(
        max_epochs=budget["max_epochs"], patience=budget["patience"], batch_size=budget["batch_size"]
    )
    r = FixedRateScreener(lr=lr, optimizer=optimizer).screen(  # type: ignore[arg-type]
        spec_for(arch, FULL_SUITES[dataset][arch]), dataset, cfg
    )
    return {
        "val_loss": r.val_loss,
        "test_accuracy": r.test_accuracy,
        "test_bpc": r.test_bpc,
        "steps": r.steps,
    }


# ---------------------------------------------------------------- analysis


def truths(rows: list[dict[str, Any]], dataset: str) -> dict[str, Any]:
    """The best-of-both truth of ``dataset`` from the fidelity cache, plus one grid's steps."""
    by_key = {(r["dataset"], r["arch"], r["screener"], r["seed"]): r for r in rows}
    archs = list(suite(dataset))
    sgd = truth_for(by_key, dataset, archs, "grid-sgd", SGD_LRS.get(dataset, SGD_LRS["default"]), 2)
    adam = truth_for(by_key, dataset, archs, "grid-adam", adam_lrs(dataset), 2)
    both = best_of_both(sgd, adam, archs)
    both["adam_grid_steps_one_seed"] = sum(adam["steps"].values()) / 2
    both["both_grids_steps_one_seed"] = sum(both["steps"].values()) / 2
    return both


START_SUBSETS: list[tuple[str, ...]] = [("p50",), ("p50", "p25"), ("p50", "p75"), ("p50", "p25", "p75")]


def _in(t: dict[str, Any], starts: tuple[str, ...] | None) -> bool:
    return starts is None or (t.get("start") or "p50") in starts  # a single start is the p50 one


def pick(
    study: dict[str, Any], k: int, *, median_start_only: bool = False, starts: tuple[str, ...] | None = None
) -> dict[str, Any] | None:
    """The pipeline's answer among the top ``k``: the succeeded tuning job with the lowest val loss
    (``median_start_only``: as if the policy had one start, the posterior's median; ``starts``: only
    those starts' jobs, as if the policy had made only them: every start trains with the same seed,
    so a subset of the jobs is exactly what that policy would have run)."""
    if median_start_only:
        starts = ("p50",)
    top = set(study["ranking"][:k])
    done = [t for t in study["tuning"] if t["arch"] in top and t["state"] == "succeeded" and _in(t, starts)]
    return min(done, key=lambda t: t["result"]["val_loss"]) if done else None


def starts_rows(study: dict[str, Any], truth: dict[str, Any], k: int) -> list[dict[str, Any]]:
    """What each start adds at ``k``: the delivered regret (weights) and the compute of every subset
    of the starts the study ran (``START_SUBSETS``)."""
    ds = study["dataset"]
    sign = -1.0 if ds == "chartext" else 1.0
    best = max(truth["test"].values(), key=lambda v: sign * v)
    screen_steps = sum(s["steps"] for s in study["screening"].values())
    top = set(study["ranking"][:k])
    out = []
    for subset in START_SUBSETS:
        answer = pick(study, k, starts=subset)
        tune = sum(
            t["result"].get("steps", 0) for t in study["tuning"] if t["arch"] in top and _in(t, subset)
        )
        out.append(
            {
                "dataset": ds,
                "starts": "+".join(subset),
                "delivered": None if answer is None else sign * (best - test_score(answer["result"], ds)),
                "compute_vs_adam_grid": (screen_steps + tune) / truth["adam_grid_steps_one_seed"],
                "compute_vs_both_grids": (screen_steps + tune) / truth["both_grids_steps_one_seed"],
            }
        )
    return out


def starts_markdown(rows: list[dict[str, Any]], k: int) -> str:
    lines = [
        f"| dataset | starts (k = {k}) | delivered regret, weights | steps / Adam grid "
        "| steps / both grids |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['dataset']} | {r['starts']} | {_fmt(r['delivered'])} "
            f"| {_fmt(r['compute_vs_adam_grid'], 3)} | {_fmt(r['compute_vs_both_grids'], 3)} |"
        )
    return "\n".join(lines) + "\n"


def analyse(
    study: dict[str, Any], truth: dict[str, Any], retrains: dict[int, dict[str, Any]]
) -> list[dict[str, Any]]:
    ds = study["dataset"]
    sign = -1.0 if ds == "chartext" else 1.0  # regret = how much worse than the best, in score units
    best_arch = max(truth["test"], key=lambda a: sign * truth["test"][a])
    best = truth["test"][best_arch]
    screen_steps = sum(s["steps"] for s in study["screening"].values())
    out = []
    for k in range(1, study["k_max"] + 1):
        answer = pick(study, k)
        top = set(study["ranking"][:k])
        tune_steps = sum(t["result"].get("steps", 0) for t in study["tuning"] if t["arch"] in top)
        row: dict[str, Any] = {
            "dataset": ds,
            "k": k,
            "best_arch": best_arch,
            "picked": answer["arch"] if answer else None,
            "selection_regret": None,
            "delivered_regret_weights": None,
            "delivered_regret_retrained": None,
            "delivered_regret_median_start": None,
            "compute_vs_adam_grid": (screen_steps + tune_steps) / truth["adam_grid_steps_one_seed"],
            "compute_vs_both_grids": (screen_steps + tune_steps) / truth["both_grids_steps_one_seed"],
            "tuner": answer["result"].get("tuner") if answer else None,
            "recommended_lr": answer["result"].get("recommended_lr") if answer else None,
            "start": answer.get("start") if answer else None,
        }
        median = pick(study, k, median_start_only=True)
        if median is not None:
            row["delivered_regret_median_start"] = sign * (best - test_score(median["result"], ds))
        if answer is not None:
            res = answer["result"]
            row["selection_regret"] = sign * (best - truth["test"][answer["arch"]])
            row["delivered_regret_weights"] = sign * (best - test_score(res, ds))
            rt = retrains.get(answer["job_id"])
            if rt is not None:
                row["delivered_regret_retrained"] = sign * (best - test_score(rt, ds))
        out.append(row)
    return out


def _fmt(x: float | None, digits: int = 2) -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def markdown(table: list[dict[str, Any]]) -> str:
    lines = [
        "| dataset | k | picked (truth's best) | tuner | selection regret | delivered regret, weights "
        "| delivered regret, retrained | delivered regret, median start only | steps / Adam grid "
        "| steps / both grids |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table:
        lines.append(
            f"| {r['dataset']} | {r['k']} | {r['picked']} ({r['best_arch']}) "
            f"| {r['tuner']} {r['start'] or ''} "
            f"| {_fmt(r['selection_regret'])} | {_fmt(r['delivered_regret_weights'])} "
            f"| {_fmt(r['delivered_regret_retrained'])} | {_fmt(r['delivered_regret_median_start'])} "
            f"| {_fmt(r['compute_vs_adam_grid'], 3)} "
            f"| {_fmt(r['compute_vs_both_grids'], 3)} |"
        )
    return "\n".join(lines) + "\n"


def plot(table: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in table})
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.2 * len(datasets), 3.4), squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=True):
        rows = [r for r in table if r["dataset"] == ds]
        ks = [r["k"] for r in rows]
        for field, label in (
            ("selection_regret", "selection"),
            ("delivered_regret_weights", "delivered (weights)"),
            ("delivered_regret_retrained", "delivered (retrained)"),
        ):
            ys = [r[field] if r[field] is not None else math.nan for r in rows]
            ax.plot(ks, ys, marker="o", label=label)
        ax.axhline(0, color="grey", lw=0.8)
        unit = "bits/char" if ds == "chartext" else "accuracy points"
        ax.set(title=ds, xlabel="k (candidates tuned)", ylabel=f"regret ({unit})", xticks=ks)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(
        description="End-to-end pipeline benchmark: the service's answer (screen, rank, promote, tune) "
        "against the fidelity study's best-of-both truth.",
    )
    parser.add_argument(
        "--datasets", default="mnist1d,digits", help="comma-separated (of mnist1d, digits, chartext)"
    )
    parser.add_argument(
        "--k-max", type=int, default=3, help="promote and tune the top k (the table shows 1..k)"
    )
    parser.add_argument(
        "--seeds", type=int, default=1, help="screening seeds per candidate (the service default: 1)"
    )
    parser.add_argument("--starts", type=int, default=3, help="tuning starts per candidate (the policy's)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the service")
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / "results" / "pipeline.jsonl")
    parser.add_argument("--truth-cache", type=Path, default=TRUTH_CACHE)
    parser.add_argument("--no-retrain", action="store_true", help="skip retraining at the recommended rate")
    parser.add_argument(
        "--smoke", action="store_true", help="a quick check of the harness: 3 architectures, 2 epochs"
    )
    parser.add_argument("--report-only", action="store_true", help="analyse the cache; train nothing")
    parser.add_argument("--markdown", type=Path, help="write the table here")
    parser.add_argument("--plot", type=Path, help="write the regret figure here (PNG)")
    args = parser.parse_args()
    if args.smoke:
        SMOKE.update(archs=3, epochs=2)
    datasets = [d for d in args.datasets.split(",") if d]
    unknown = [d for d in datasets if d not in FULL_SUITES]
    if unknown:
        parser.error(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(FULL_SUITES)}")
    if not 1 <= args.k_max <= 10:
        parser.error("--k-max must be in 1..10")
    print(machine_line())

    args.cache.parent.mkdir(parents=True, exist_ok=True)
    cached = [json.loads(x) for x in args.cache.read_text().splitlines()] if args.cache.exists() else []
    studies = {r["key"]: r for r in cached if r.get("kind") == "study" and r.get("format") == FORMAT}
    retrains = {r["job_id"]: r for r in cached if r.get("kind") == "retrain"}

    todo = [ds for ds in datasets if config_key(ds, args.seeds, args.k_max, args.starts) not in studies]
    if todo and not args.report_only:
        with tempfile.TemporaryDirectory(prefix="archscreen-pipeline-") as tmp:
            t0 = time.monotonic()
            with running_service(args.workers, Path(tmp)) as client:
                for ds in tqdm(todo, desc="datasets", unit="study", file=sys.stderr):
                    key = config_key(ds, args.seeds, args.k_max, args.starts)
                    row = run_dataset(client, ds, args.seeds, args.k_max, args.starts, key)
                    row["seconds"] = time.monotonic() - t0
                    studies[key] = row
                    with args.cache.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
    if not args.no_retrain and not args.report_only:
        for ds in datasets:
            study = studies.get(config_key(ds, args.seeds, args.k_max, args.starts))
            if study is None:
                continue
            for t in tqdm(study["tuning"], desc=f"{ds}: retraining", file=sys.stderr, leave=False):
                res = t["result"]
                if t["state"] != "succeeded" or t["job_id"] in retrains or not res.get("recommended_lr"):
                    continue
                rt = retrain(
                    ds, t["arch"], res["recommended_lr"], res.get("base_optimizer", "sgd"), study["budget"]
                )
                rt |= {"kind": "retrain", "job_id": t["job_id"], "dataset": ds, "arch": t["arch"]}
                retrains[t["job_id"]] = rt
                with args.cache.open("a") as fh:
                    fh.write(json.dumps(rt) + "\n")

    truth_rows = [json.loads(x) for x in args.truth_cache.read_text().splitlines()]
    table: list[dict[str, Any]] = []
    by_starts: list[dict[str, Any]] = []
    k_head = min(2, args.k_max)
    for ds in datasets:
        study = studies.get(config_key(ds, args.seeds, args.k_max, args.starts))
        if study is None:
            print(f"{ds}: no completed study in the cache (run without --report-only)")
            continue
        truth = truths(truth_rows, ds)
        table += analyse(study, truth, retrains)
        by_starts += starts_rows(study, truth, k_head)
        tuners = sorted({t["result"].get("tuner", "?") for t in study["tuning"]})
        failed = [t["arch"] for t in study["tuning"] if t["state"] != "succeeded"]
        print(
            f"{ds}: ranking {study['ranking'][:5]}..., tuners {tuners}, tuning jobs not succeeded: {failed}"
        )
    text = markdown(table) + "\n" + starts_markdown(by_starts, k_head)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.plot and table:
        plot(table, args.plot)
    for k in range(1, args.k_max + 1):
        rows = [r for r in table if r["k"] == k and r["dataset"] in CLASSIFICATION]
        for field in (
            "selection_regret",
            "delivered_regret_weights",
            "delivered_regret_retrained",
            "delivered_regret_median_start",
        ):
            vals = [r[field] for r in rows if r[field] is not None]
            if vals:
                mean, worst = statistics.fmean(vals), max(vals)
                print(f"k={k} {field}: mean {mean:.2f} pp, worst {worst:.2f} pp over {len(vals)} datasets")
        comp = [r["compute_vs_adam_grid"] for r in rows]
        if comp:
            print(f"k={k} compute vs one Adam grid: {statistics.fmean(comp):.3f}, worst {max(comp):.3f}")
    for subset in START_SUBSETS:
        name = "+".join(subset)
        rows = [r for r in by_starts if r["starts"] == name and r["dataset"] in CLASSIFICATION]
        vals = [r["delivered"] for r in rows if r["delivered"] is not None]
        comp = [r["compute_vs_adam_grid"] for r in rows]
        if vals:
            print(
                f"k={k_head} starts {name}: delivered regret mean {statistics.fmean(vals):.2f} pp, "
                f"worst {max(vals):.2f} pp; compute vs one Adam grid worst {max(comp):.3f}"
            )
    k2 = [r["delivered_regret_weights"] for r in table if r["k"] == k_head and r["dataset"] in CLASSIFICATION]
    k2 = [x for x in k2 if x is not None]
    print(
        f"pipeline_delivered_regret_pp: {statistics.fmean(k2):.3f}"
        if k2
        else "pipeline_delivered_regret_pp: nan"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

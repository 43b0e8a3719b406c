"""The tuning stage's options against today's multi-start default (issue 29, item 6).

On each held-out suite (``bench/fidelity.py``'s study II pools: the first study's report half plus
the new architectures) the bench takes one net: with ``--nets top`` the **top screened net** (the
lowest mean Alrao-Adam validation loss over the cached screening runs of that pool,
``docs/data/fidelity-*.jsonl``: ``resnet`` on digits, ``gru-64`` on MNIST-1D, :func:`top_screened`);
with ``--nets new`` (the default, what docs/benchmarks.md reports) the top screened of the pool's
*new* architectures (``h-mlp-wide-shallow`` on digits, ``h-cnn-wide-shallow`` on MNIST-1D, second
in the whole pool on MNIST-1D), about a fifth of the CPU: a first attempt with ``resnet`` had used 89
CPU-seconds (9.9 of them its screening) without finishing its first seed's 3-start tuning, on a
box shared with a long benchmark (load 10 to 14 on 2 cores): the 3-seed table would have ended
past the deadline. It screens the net once per seed with the
product's screener (Alrao-Adam, the pipeline bench's budget), then runs each tuning-stage option
(:mod:`archscreen.core.tuners.stage`) from that screening, with the default tuner (``fd2-adam``):

* ``multi`` (today's default): one run per posterior quartile (median, 25th, 75th percentile),
  every start with the same training seed, the best by validation loss;
* ``posterior-width``: the first ``n`` of those starts, ``n`` from the posterior's width. Its
  runs are ``multi``'s first ``n`` runs (same seed, same rates, deterministic training): they are
  read from ``multi``'s records, with their own measured CPU-seconds, not trained twice;
* ``screen-weights``: one run from the screening's weights (body + most-weighted copy) at the
  posterior's rate;
* ``halving``: ``multi``'s starts through the rung scheduler (``tune_with_halving``, η = 3).

For each it records the **delivered test score** (test accuracy, in points, of the weights the
option hands over: its picked run's best epoch) and the **process CPU-seconds** of the tuning stage
(``time.process_time`` around the option's training, ``torch.set_num_threads(1)``; the screening's
own CPU is recorded apart: every option shares it). Three seeds (seed = screening and training
seed). Compared at equal compute in the sense of a cap: every option spends at most the default's
CPU; the table gives each option's CPU ratio to the default's.

The rule that picks the winner, written before measuring: the option with the highest delivered
score averaged over datasets and seeds; among options within 0.1 points of that, the cheapest
(lowest mean CPU ratio). It becomes ``core/defaults.py``'s ``TUNING`` default; if that is
``multi``, today's default stays.

Resumable: one JSON line per (dataset, seed, option) in ``--cache`` (default
``bench/results/tuning_stage.jsonl``), each screening's checkpoint beside it; a line present is
not rerun. ``--quick`` (CI): digits only, a small MLP, 4 epochs, one seed, its own cache.
Run at ``nice -n 10``, one process. Last line: ``tuning_stage: <best option> <delta points>
<cpu ratio>`` (delta: its mean delivered score minus the default's; ratio: its CPU over the
default's).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line
from fidelity_suites import BUDGETS, FULL_SUITES, HELDOUT_SUITES

from archscreen.core.data import load_dataset
from archscreen.core.names import default_tuner_for
from archscreen.core.screening import screening_run
from archscreen.core.tuners.stage import (
    chosen_copy,
    plain_state_from_alrao,
    screening_weights,
    starts_for_width,
    tune_with_halving,
)
from archscreen.core.tuning import get_tuner, initial_lr_from_screen, posterior_starts

ROOT = Path(__file__).resolve().parents[1]
FORMAT = 2  # 2: the architecture is part of the key
# The promotion's start order (worker/promotion.py START_QUANTILES; a test checks they agree).
START_QUANTILES = (0.5, 0.25, 0.75)
OPTIONS = ("multi", "posterior-width", "screen-weights", "halving")
# The top screened net of each held-out pool (see the module docstring; ``top_screened`` recomputes it).
TOP_NET = {"digits": "resnet", "mnist1d": "gru-64"}
# What this bench measured (``--nets``, default): the top screened *new* architecture of each
# held-out pool, the cheapest nets near the top (see docs/benchmarks.md, "Tuning stage", for why
# not TOP_NET: the shared 2-core box could not train resnet/gru-64 x 7 runs x 3 seeds in time).
MEASURED_NET = {"digits": "h-mlp-wide-shallow", "mnist1d": "h-cnn-wide-shallow"}
QUICK_NET = {"name": "q-mlp", "layers": ["flatten", {"linear": 64}, "relu"]}


def top_screened(dataset: str) -> str:
    """The held-out pool's architecture with the lowest mean cached Alrao-Adam validation loss."""
    from fidelity import pool_of

    losses: dict[str, list[float]] = {}
    for name in ("fidelity-full.jsonl", "fidelity-ii.jsonl"):
        for line in (ROOT / "docs" / "data" / name).read_text().splitlines():
            r = json.loads(line)
            ok = r["dataset"] == dataset and r["screener"] == "alrao-adam[1e-4..0.1]"
            if ok and pool_of(dataset, r["arch"]) != "selection" and math.isfinite(r["val_loss"]):
                losses.setdefault(r["arch"], []).append(r["val_loss"])
    return min(losses, key=lambda a: statistics.fmean(losses[a]))


def arch_of(dataset: str, quick: bool, nets: str = "new") -> str:
    """The net measured on ``dataset``: ``--nets top`` (TOP_NET) or ``new`` (MEASURED_NET)."""
    return str(QUICK_NET["name"]) if quick else (TOP_NET if nets == "top" else MEASURED_NET)[dataset]


def spec_of(dataset: str, arch: str) -> dict[str, Any]:
    if arch == QUICK_NET["name"]:
        return {"head": "classifier", **QUICK_NET}
    body = {**FULL_SUITES[dataset], **HELDOUT_SUITES[dataset]}[arch]
    return {"name": arch, "head": "classifier", **body}


def budget_of(dataset: str, quick: bool) -> dict[str, Any]:
    """The pipeline bench's study budget (``bench/pipeline.py`` ``study_config``): the fidelity
    budget with doubled patience; ``--quick``: 4 epochs."""
    b = BUDGETS[dataset]
    if quick:
        return {"max_epochs": 4, "patience": 2, "batch_size": 32}
    return {"max_epochs": b["max_epochs"], "patience": 2 * b["patience"], "batch_size": b["batch_size"]}


def _cpu() -> float:
    return time.process_time()


def _row(res: Any, cpu: float, **extra: Any) -> dict[str, Any]:
    return {
        "score": 100.0 * float(res.test_accuracy),
        "val_loss": float(res.val_loss),
        "cpu_s": cpu,
        "epochs": int(res.epochs),
        **extra,
    }


def screen(dataset: str, arch: str, seed: int, quick: bool, ckpt: Path) -> dict[str, Any]:
    """One Alrao screening of the net (its checkpoint kept for the screen-weights start)."""
    screener, config = screening_run(budget_of(dataset, quick), seed=seed)
    splits = load_dataset(dataset, seed=seed)
    ckpt.unlink(missing_ok=True)
    t0 = _cpu()
    res = screener.screen(spec_of(dataset, arch), splits, config, checkpoint_path=ckpt)
    cpu = _cpu() - t0
    lr_range = list(screener.settings(res.task)[:2])
    return {
        "score": 100.0 * float(res.test_accuracy or 0.0),
        "cpu_s": cpu,
        "switch_posterior": res.switch_posterior,
        "preferred_lr": res.preferred_lr,
        "lr_range": lr_range,
        "checkpoint": str(ckpt),
    }


def run_option(
    option: str, dataset: str, arch: str, seed: int, quick: bool, scr: dict[str, Any], work: Path
) -> dict[str, Any]:
    """One option's tuning stage from the screening ``scr``: its delivered score and CPU."""
    _, config = screening_run(budget_of(dataset, quick), seed=seed)
    splits = load_dataset(dataset, seed=seed)
    spec = spec_of(dataset, arch)
    tuner = get_tuner(default_tuner_for("adam"))
    rng = tuple(scr["lr_range"])
    rates: list[float] = []
    for q in START_QUANTILES:
        lr = posterior_starts(scr, (q,), rng)[0]
        if not any(math.isclose(lr, r, rel_tol=1e-9) for r in rates):
            rates.append(lr)
    if option == "multi":
        starts = []
        for lr in rates:
            t0 = _cpu()
            res = tuner.tune(spec, splits, lr, config, seed)
            starts.append(_row(res, _cpu() - t0, lr=lr))
        best = min(starts, key=lambda s: s["val_loss"] if math.isfinite(s["val_loss"]) else math.inf)
        return {**best, "cpu_s": sum(s["cpu_s"] for s in starts), "starts": starts}
    if option == "screen-weights":
        t0 = _cpu()
        state = plain_state_from_alrao(screening_weights(scr["checkpoint"]), chosen_copy(scr))
        lr = initial_lr_from_screen(scr, rng)
        res = tuner.tune(spec, splits, lr, config, seed, init_state=state)
        return _row(res, _cpu() - t0, lr=lr, copy=chosen_copy(scr))
    if option == "halving":
        folder = work / f"halving-{dataset}-{arch}-{seed}"
        for old in folder.glob("start-*.pt"):
            old.unlink()
        t0 = _cpu()
        out = tune_with_halving(tuner, spec, splits, rates, config, folder)
        cpu = _cpu() - t0
        return _row(out.best, cpu, rungs=out.rungs, values=out.values, lr=out.best.init_lr)
    raise ValueError(f"unknown option {option!r}")


def width_from_multi(multi: dict[str, Any], scr: dict[str, Any]) -> dict[str, Any]:
    """posterior-width: the first n of multi's starts (their own records and CPU-seconds)."""
    n = min(starts_for_width(scr), len(multi["starts"]))
    first = multi["starts"][:n]
    best = min(first, key=lambda s: s["val_loss"] if math.isfinite(s["val_loss"]) else math.inf)
    return {**best, "cpu_s": sum(s["cpu_s"] for s in first), "n_starts": n, "derived_from": "multi"}


def load_cache(path: Path, archs: dict[str, str]) -> dict[tuple[str, int, str], dict[str, Any]]:
    """The cached rows of the nets ``archs`` (dataset -> architecture), keyed (dataset, seed, option)."""
    rows: dict[tuple[str, int, str], dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if r.get("format") == FORMAT and archs.get(r["dataset"]) == r.get("arch"):
                rows[(r["dataset"], r["seed"], r["option"])] = r
    return rows


def _append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def execute(
    archs: dict[str, str], seeds: int, quick: bool, cache: Path, work: Path
) -> dict[tuple[str, int, str], dict[str, Any]]:
    """Run every (dataset, seed, option) the cache lacks (checkpoints in ``work``); returns the cache."""
    rows = load_cache(cache, archs)
    work.mkdir(parents=True, exist_ok=True)
    for ds, arch in archs.items():
        for seed in range(seeds):
            key = (ds, seed, "screen")
            if key not in rows or not Path(rows[key]["checkpoint"]).exists():
                scr = screen(ds, arch, seed, quick, work / f"screen-{ds}-{arch}-{seed}.pt")
                rows[key] = {
                    "format": FORMAT,
                    "dataset": ds,
                    "arch": arch,
                    "seed": seed,
                    "option": "screen",
                    **scr,
                }
                _append(cache, rows[key])
            for option in OPTIONS:
                if (ds, seed, option) in rows:
                    continue
                if option == "posterior-width":
                    out = width_from_multi(rows[(ds, seed, "multi")], rows[key])
                else:
                    out = run_option(option, ds, arch, seed, quick, rows[key], work)
                rows[(ds, seed, option)] = {
                    "format": FORMAT,
                    "dataset": ds,
                    "arch": arch,
                    "seed": seed,
                    "option": option,
                    **out,
                }
                _append(cache, rows[(ds, seed, option)])
                print(
                    f"{ds} seed {seed} {option}: {out['score']:.2f} pts, {out['cpu_s']:.1f} cpu-s", flush=True
                )
    return rows


def table(
    rows: dict[tuple[str, int, str], dict[str, Any]], datasets: list[str], seeds: int
) -> list[dict[str, Any]]:
    """One entry per (option, dataset): delivered score mean and spread (sample std), CPU, ratio."""
    out = []
    for option in OPTIONS:
        for ds in datasets:
            # paired: only the seeds where both the option and the default finished
            paired = [s for s in range(seeds) if (ds, s, option) in rows and (ds, s, "multi") in rows]
            got = [rows[(ds, s, option)] for s in paired]
            base = [rows[(ds, s, "multi")] for s in paired]
            if not got or not base:
                continue
            scores = [r["score"] for r in got]
            cpu = statistics.fmean(r["cpu_s"] for r in got)
            out.append(
                {
                    "option": option,
                    "dataset": ds,
                    "n": len(got),
                    "mean": statistics.fmean(scores),
                    "sd": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                    "cpu_s": cpu,
                    "ratio": cpu / statistics.fmean(r["cpu_s"] for r in base),
                    "delta": statistics.fmean(scores) - statistics.fmean(r["score"] for r in base),
                }
            )
    return out


def markdown(entries: list[dict[str, Any]]) -> str:
    lines = [
        "| option | dataset | delivered test score (pts, mean ± sd) | Δ vs multi (pts) "
        "| tuning CPU-s | CPU ratio |",
        "|---|---|---|---|---|---|",
    ]
    for e in entries:
        lines.append(
            f"| {e['option']} | {e['dataset']} | {e['mean']:.2f} ± {e['sd']:.2f} (n={e['n']}) "
            f"| {e['delta']:+.2f} | {e['cpu_s']:.1f} | {e['ratio']:.2f} |"
        )
    return "\n".join(lines)


def winner(entries: list[dict[str, Any]]) -> tuple[str, float, float]:
    """The module docstring's rule: (option, mean delta over datasets, mean CPU ratio)."""
    by: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        by.setdefault(e["option"], []).append(e)
    n_ds = max(len(v) for v in by.values())
    complete = {o: v for o, v in by.items() if len(v) == n_ds}
    score = {o: statistics.fmean(e["mean"] for e in v) for o, v in complete.items()}
    top = max(score.values())
    near = [o for o in complete if score[o] >= top - 0.1]
    best = min(near, key=lambda o: statistics.fmean(e["ratio"] for e in complete[o]))
    delta = statistics.fmean(e["delta"] for e in complete[best])
    return best, delta, statistics.fmean(e["ratio"] for e in complete[best])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--datasets", default="digits,mnist1d")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="CI: digits, a small MLP, 4 epochs, 1 seed")
    p.add_argument("--cache", type=Path, default=None)
    p.add_argument("--markdown", type=Path, default=None, help="write the table here")
    p.add_argument("--report-only", action="store_true")
    p.add_argument("--nets", choices=("new", "top"), default="new", help="MEASURED_NET or TOP_NET")
    p.add_argument(
        "--workdir", type=Path, default=None, help="checkpoints (default bench/results/<cache name>)"
    )
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    datasets = ["digits"] if args.quick else [d.strip() for d in args.datasets.split(",") if d.strip()]
    seeds = 1 if args.quick else args.seeds
    name = "tuning_stage_quick.jsonl" if args.quick else "tuning_stage.jsonl"
    cache = args.cache or ROOT / "bench" / "results" / name
    cache.parent.mkdir(parents=True, exist_ok=True)
    archs = {ds: arch_of(ds, args.quick, args.nets) for ds in datasets}
    work = args.workdir or ROOT / "bench" / "results" / cache.stem
    rows = load_cache(cache, archs) if args.report_only else execute(archs, seeds, args.quick, cache, work)
    entries = table(rows, datasets, seeds)
    print("nets: " + ", ".join(f"{ds} {a}" for ds, a in archs.items()) + f"; {machine_line()}")
    text = markdown(entries)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if not entries:
        print("tuning_stage: no results")
        return 1
    best, delta, ratio = winner(entries)
    print(f"tuning_stage: {best} {delta:+.2f} {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

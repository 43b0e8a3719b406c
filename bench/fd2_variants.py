"""Which fd2 configuration recommends a rate that trains well? One seed, many variants.

For each architecture and each fd2 variant (a set of ``FD2Tuner`` switches): one tuning run from
``--init-lr``, then plain SGD retrained from scratch at the rate each recommendation rule gives
(``tail``: the converged rate; ``mean``: the mean rate over the run). The SGD grid on the same
seed is printed beside it. This is the exploration behind fd2's defaults; ``bench/tuner_quality.py``
(2 seeds, all tuners, reference methods) is the measurement of record.

Runs are cached one JSON line each in ``--cache`` (keyed by arch, variant, seed), so an
interrupted study resumes. Output: a markdown table, cells ``tail rate → acc / mean rate → acc``.
Last line: ``best_variant_worst_gap_pp: X`` (the variant whose worst gap to the seed's grid is
smallest, with the better of its two rules fixed across architectures).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line

from archscreen.core.screening import FixedRateScreener
from archscreen.core.spec import parse_spec
from archscreen.core.training.loop import TrainConfig
from archscreen.core.tuning import FD2Tuner, converged

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ["logistic_regression", "mlp", "lenet5"]
GRID = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
F32, F64 = "float32", "float64"
RULES = ("tail", "mean", "best")
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "previous: x2 float32": {"max_change": 2.0, "eval_dtype": F32},
    "x2": {"max_change": 2.0},
    "x1.1 float32": {"eval_dtype": F32},
    "x1.05": {"max_change": 1.05},
    "average 0.9": {"average": 0.9},
    "x2 average 0.9": {"max_change": 2.0, "average": 0.9},
    "validation 256": {"eval_batch": "validation", "eval_samples": 256, "max_change": 2.0},
    "validation 256 average 0.9": {
        "eval_batch": "validation",
        "eval_samples": 256,
        "max_change": 2.0,
        "average": 0.9,
    },
    "validation 64 momentum 0.9": {"eval_batch": "validation", "max_change": 2.0, "momentum": 0.9},
    "guard": {"guard": True},
    "x2 guard": {"max_change": 2.0, "guard": True},
}


def _dataset(arch: str) -> str:
    first = (ROOT / "examples" / f"{arch}.yaml").read_text().splitlines()[0]
    return first.split(":", 1)[1].strip()


def _options(variant: str) -> dict[str, Any]:
    opts = dict(VARIANTS[variant])
    if "eval_dtype" in opts:
        opts["eval_dtype"] = getattr(torch, opts["eval_dtype"])
    return opts


def _job(job: tuple[str, str, Any, int, dict[str, Any]]) -> dict[str, Any]:
    kind, arch, arg, seed, cfg = job
    torch.set_num_threads(1)
    spec = parse_spec(ROOT / "examples" / f"{arch}.yaml")
    config = TrainConfig(**cfg, seed=seed)
    if kind == "grid":
        r = FixedRateScreener(lr=arg).screen(spec, _dataset(arch), config)
        return {"kind": kind, "arch": arch, "key": str(arg), "seed": seed, "lr": arg, "acc": r.test_accuracy}
    tuner = FD2Tuner(**_options(arg))
    tuner.max_points = 1_000_000  # every step's rate, so both rules are exact
    t = tuner.tune(spec, _dataset(arch), 0.01, config)
    out: dict[str, Any] = {"kind": kind, "arch": arch, "key": arg, "seed": seed, "events": t.events}
    for rule in RULES:
        lr = _rule(t.trajectory, t.steps, rule, t.best_epoch * (t.steps // max(t.epochs, 1)))
        r = FixedRateScreener(lr=lr).screen(spec, _dataset(arch), config)
        out[rule] = {"lr": lr, "acc": r.test_accuracy}
    out["own_acc"] = t.test_accuracy
    return out


def _rule(trajectory: list[list[float]], steps: int, rule: str, best_step: int = 0) -> float:
    """``recommended_lr`` under ``rule`` from an unthinned trajectory (as ``FD2Tuner`` computes it);
    ``best_step``: the step count at the end of the best epoch (rule ``"best"``)."""
    rates = [(s, lr) for s, lr in trajectory if lr > 0 and math.isfinite(lr)]
    if rule == "best" and best_step > 0:
        upto = [lr for s, lr in rates if 1 <= s <= best_step]
        return sum(upto) / len(upto)
    if rule in ("mean", "best"):
        later = [lr for s, lr in rates if s >= 1]
        return sum(later) / len(later)
    return converged(trajectory, steps)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument(
        "--variants",
        default=",".join(VARIANTS),
        help=f"comma-separated names among: {', '.join(VARIANTS)}",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path("fd2_variants.jsonl"))
    args = parser.parse_args()
    archs = args.archs.split(",")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    cfg = {"max_epochs": args.epochs, "patience": 5, "batch_size": 32}
    done: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    if args.cache.exists():
        for line in args.cache.read_text().splitlines():
            r = json.loads(line)
            done[(r["kind"], r["arch"], r["key"], r["seed"])] = r
    jobs = [("grid", a, lr, args.seed, cfg) for a in archs for lr in GRID]
    jobs += [("tune", a, v, args.seed, cfg) for a in archs for v in variants]
    todo = [j for j in jobs if (j[0], j[1], str(j[2]), j[3]) not in done]
    print(f"# {machine_line()}; seed {args.seed}, {args.epochs} epochs, batch 32, tuners start at 0.01")
    print(f"# {len(jobs) - len(todo)} runs cached in {args.cache}, {len(todo)} to run", flush=True)
    with ProcessPoolExecutor(args.workers) as pool, args.cache.open("a") as cache:
        for r in pool.map(_job, todo):
            cache.write(json.dumps(r) + "\n")
            cache.flush()
            done[(r["kind"], r["arch"], r["key"], r["seed"])] = r
    best: dict[str, tuple[float, float]] = {}
    for a in archs:
        grid = {lr: done[("grid", a, str(lr), args.seed)]["acc"] for lr in GRID}
        lr_best = max(grid, key=lambda lr: grid[lr])
        best[a] = (lr_best, grid[lr_best])
    print("| variant | " + " | ".join(f"{a} ({best[a][0]:g}: {100 * best[a][1]:.1f}%)" for a in archs) + " |")
    print("|---|" + "---|" * len(archs))
    worst_by_variant: dict[str, float] = {}
    for v in variants:
        cells = []
        worst = dict.fromkeys(RULES, -math.inf)
        for a in archs:
            r = done[("tune", a, v, args.seed)]
            for rule in worst:
                worst[rule] = max(worst[rule], 100 * (best[a][1] - r[rule]["acc"]))
            cells.append(" / ".join(f"{r[rule]['lr']:.3g} → {100 * r[rule]['acc']:.1f}" for rule in RULES))
        worst_by_variant[v] = min(worst.values())
        print(f"| {v} | " + " | ".join(cells) + " |")
    name = min(worst_by_variant, key=lambda k: worst_by_variant[k])
    print(f"# best variant: {name!r} (its better rule's worst gap to this seed's best grid rate)")
    print(f"best_variant_worst_gap_pp: {worst_by_variant[name]:.2f}")


if __name__ == "__main__":
    main()

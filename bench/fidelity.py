"""Screening fidelity: does one Alrao run rank architectures like a full LR grid?

For every architecture of the suite:

* ground truth: plain SGD at each rate of a log-spaced grid, several seeds,
  early stopping on validation loss; the architecture's true score is the
  best rate's mean validation loss (and its test accuracy);
* with ``--adam-grid``, a second ground truth: Adam over 6 rates (1e-4 ... 3e-2);
* screeners, one run each (``--screener-seeds N``: N runs, to show a single run's
  spread): Alrao-SGD (our defaults), Adam at its default rate 1e-3 (what a user
  would do instead: the bar), plain SGD at 0.1, and Alrao variants.

Reported per screener: Spearman and Kendall between its score and the true
score, top-1 regret (true score of the picked architecture minus the best),
and the compute ratio (grid steps / screener steps). A noise ceiling shows how
well grid seed 0 ranks against grid seed 1.

Results are cached as JSON lines (one per run) under ``bench/results/``, so
an interrupted study resumes; ``--jobs N`` runs N trainings in parallel.
Last line: ``fidelity_spearman: X`` (Alrao-SGD vs the SGD-grid truth).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line
from archscreen.core.screening import AlraoScreener, FixedRateScreener, Screener
from archscreen.core.training.loop import TrainConfig

RESULTS = Path(__file__).resolve().parent / "results"

FLAT = ["flatten"]
QUICK_SUITE: dict[str, dict[str, Any]] = {
    "logreg": {"layers": FLAT},
    "mlp-narrow": {"layers": [*FLAT, {"linear": 16}, "relu"]},
    "mlp-wide": {"layers": [*FLAT, {"linear": 256}, "relu", {"linear": 256}, "relu"]},
    "mlp-tanh-deep": {"layers": [*FLAT, *([{"linear": 64}, "tanh"] * 4)]},
    "mlp-sigmoid-deep": {"layers": [*FLAT, *([{"linear": 64}, "sigmoid"] * 4)]},
    "mlp-dropout": {"layers": [*FLAT, {"linear": 128}, "relu", {"dropout": 0.3}, {"linear": 128}, "relu"]},
    "cnn": {
        "layers": [
            {"conv1d": {"out": 16, "kernel": 5, "padding": 2}},
            "relu",
            {"maxpool1d": 2},
            {"conv1d": {"out": 32, "kernel": 5, "padding": 2}},
            "relu",
            {"maxpool1d": 2},
            "flatten",
            {"linear": 64},
            "relu",
        ]
    },
    "cnn-bn": {
        "layers": [
            {"conv1d": {"out": 16, "kernel": 5, "padding": 2}},
            "batchnorm",
            "relu",
            {"maxpool1d": 2},
            {"conv1d": {"out": 32, "kernel": 5, "padding": 2}},
            "batchnorm",
            "relu",
            {"maxpool1d": 2},
            "flatten",
            {"linear": 64},
            "relu",
        ]
    },
    "gru-16": {"layers": [{"permute": [1, 0]}, {"gru": {"hidden": 16, "return": "last"}}]},
    "gru-64": {"layers": [{"permute": [1, 0]}, {"gru": {"hidden": 64, "return": "last"}}]},
}
QUICK_LRS = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
# The second ground truth (--adam-grid): Adam over 6 log-spaced rates around its default.
ADAM_LRS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
GRIDS = {"sgd": ("grid-sgd", "sgd"), "adam": ("grid-adam", "adam")}


# One run each. The first is the product's default; the next two are the baselines a
# user would run instead; the rest are Alrao variants under study (not defaults).
SCREENERS: dict[str, Screener] = {
    "alrao-sgd": AlraoScreener(),
    "adam@1e-3": FixedRateScreener(lr=1e-3, optimizer="adam"),
    "sgd@0.1": FixedRateScreener(lr=0.1),
    "alrao-adam": AlraoScreener(base="adam"),
    "alrao-sgd[1e-3,1]": AlraoScreener(lr_min=1e-3, lr_max=1.0),
}


def spec_for(name: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "head": "classifier", **body}


def screeners(
    lrs: list[float], seeds: int, adam_grid: bool = False, screener_seeds: int = 1
) -> list[tuple[str, int, Screener]]:
    """(label, seed, screener) for every run of the study."""
    runs: list[tuple[str, int, Screener]] = []
    for lr in lrs:
        for s in range(seeds):
            runs.append((f"grid-sgd@{lr:g}", s, FixedRateScreener(lr=lr)))
    if adam_grid:
        for lr in ADAM_LRS:
            for s in range(seeds):
                runs.append((f"grid-adam@{lr:g}", s, FixedRateScreener(lr=lr, optimizer="adam")))
    for label, scr in SCREENERS.items():
        for s in range(screener_seeds):
            runs.append((label, s, scr))
    return runs


def run_one(
    arch: str,
    body: dict[str, Any],
    dataset: str,
    label: str,
    seed: int,
    screener: Screener,
    config: dict[str, Any],
) -> dict[str, Any]:
    torch.set_num_threads(1)
    cfg = TrainConfig(**{**config, "seed": seed})
    r = screener.screen(spec_for(arch, body), dataset, cfg)
    return {
        "arch": arch,
        "dataset": dataset,
        "screener": label,
        "seed": seed,
        "val_loss": r.val_loss,
        "val_accuracy": r.val_accuracy,
        "test_accuracy": r.test_accuracy,
        "steps": r.steps,
        "seconds": r.seconds,
        "epochs": r.epochs,
        "best_epoch": r.best_epoch,
        "stopped_because": r.stopped_because,
        "preferred_lr": r.preferred_lr,
    }


def finite(x: float) -> float:
    return x if math.isfinite(x) else math.inf


def analyse(
    rows: list[dict[str, Any]], lrs: list[float], seeds: int, grid: str = "grid-sgd"
) -> dict[str, Any]:
    """Rank correlations of each screener against the ground truth of ``grid`` (its best rate)."""
    archs = sorted({r["arch"] for r in rows})
    by = {(r["arch"], r["screener"], r["seed"]): r for r in rows}
    truth: dict[str, float] = {}
    truth_lr: dict[str, float] = {}
    truth_acc: dict[str, float] = {}
    seed_scores: dict[int, dict[str, float]] = {s: {} for s in range(seeds)}
    grid_steps = {}
    capped: list[str] = []
    for a in archs:
        means = {
            lr: sum(finite(by[(a, f"{grid}@{lr:g}", s)]["val_loss"]) for s in range(seeds)) / seeds
            for lr in lrs
        }
        best = min(means, key=lambda k: means[k])
        truth[a], truth_lr[a] = means[best], best
        truth_acc[a] = sum(by[(a, f"{grid}@{best:g}", s)]["test_accuracy"] for s in range(seeds)) / seeds
        for s in range(seeds):
            seed_scores[s][a] = min(finite(by[(a, f"{grid}@{lr:g}", s)]["val_loss"]) for lr in lrs)
        grid_steps[a] = sum(by[(a, f"{grid}@{lr:g}", s)]["steps"] for lr in lrs for s in range(seeds))
        cap = [
            lr
            for lr in lrs
            for s in range(seeds)
            if by[(a, f"{grid}@{lr:g}", s)]["stopped_because"] == "max_epochs" and lr == best
        ]
        if cap:
            print(f"# warning ({grid}): {a}: best rate {best:g} hit the epoch cap in {len(cap)} seed(s)")
            capped.append(a)
    t = [truth[a] for a in archs]
    out: dict[str, Any] = {
        "archs": archs,
        "truth": truth,
        "truth_lr": truth_lr,
        "truth_acc": truth_acc,
        "capped": capped,
    }
    if seeds >= 2:
        s0, s1 = [seed_scores[0][a] for a in archs], [seed_scores[1][a] for a in archs]
        out["noise_ceiling_spearman"] = stats.spearmanr(s0, s1).statistic
    out["screeners"] = {}
    for label in SCREENERS:
        if any((a, label, 0) not in by for a in archs):
            continue
        scores = [finite(by[(a, label, 0)]["val_loss"]) for a in archs]
        picked = archs[min(range(len(archs)), key=lambda i: scores[i])]
        steps = sum(by[(a, label, 0)]["steps"] for a in archs)
        out["screeners"][label] = {
            "spearman": stats.spearmanr(scores, t).statistic,
            "kendall": stats.kendalltau(scores, t).statistic,
            "top1_regret": truth[picked] - min(t),
            "picked": picked,
            "compute_ratio": sum(grid_steps.values()) / steps,
            "mean_abs_acc_gap_pp": 100
            * sum(abs((by[(a, label, 0)]["test_accuracy"] or 0) - truth_acc[a]) for a in archs)
            / len(archs),
            "scores": dict(zip(archs, scores, strict=True)),
        }
        # the same screener with other seeds (--screener-seeds): how much one run's ranking varies
        per_seed = [
            stats.spearmanr([finite(by[(a, label, s)]["val_loss"]) for a in archs], t).statistic
            for s in range(64)
            if all((a, label, s) in by for a in archs)
        ]
        if len(per_seed) > 1:
            out["screeners"][label]["spearman_seeds"] = per_seed
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the CI-sized study (default)")
    parser.add_argument("--dataset", default="mnist1d")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--patience", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--adam-grid", action="store_true", help="also the Adam-grid ground truth (6 rates)")
    parser.add_argument(
        "--screener-seeds",
        type=int,
        default=1,
        help="runs of each screener with seeds 0..N-1 (spread of one run)",
    )
    parser.add_argument("--deadline-s", type=float, default=None, help="stop submitting runs after this long")
    args = parser.parse_args()
    lrs, suite = QUICK_LRS, QUICK_SUITE
    config = {"max_epochs": args.max_epochs, "patience": args.patience, "batch_size": args.batch_size}
    cache = args.out or RESULTS / f"fidelity-quick-{args.dataset}.jsonl"
    cache.parent.mkdir(parents=True, exist_ok=True)
    rows = [json.loads(line) for line in cache.read_text().splitlines()] if cache.exists() else []
    done = {(r["arch"], r["screener"], r["seed"]) for r in rows}
    todo = [
        (a, body, label, seed, scr)
        for a, body in suite.items()
        for label, seed, scr in screeners(lrs, args.seeds, args.adam_grid, args.screener_seeds)
        if (a, label, seed) not in done
    ]
    print(f"# {machine_line()}; {len(rows)} cached runs, {len(todo)} to go", flush=True)
    t0 = time.monotonic()
    finished = 0
    with ProcessPoolExecutor(max_workers=args.jobs) as pool, cache.open("a") as fh:
        futures = [
            pool.submit(run_one, a, body, args.dataset, label, seed, scr, config)
            for a, body, label, seed, scr in todo
        ]
        for fut in as_completed(futures):
            row = fut.result()
            rows.append(row)
            finished += 1
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            print(
                f"[{finished}/{len(todo)}] {row['arch']} {row['screener']} seed {row['seed']}: "
                f"val_loss {row['val_loss']:.4f} ({row['epochs']} ep, {row['seconds']:.1f}s)",
                flush=True,
            )
            if args.deadline_s is not None and time.monotonic() - t0 > args.deadline_s:
                for f in futures:
                    f.cancel()
                break
    if finished < len(todo):
        print(
            f"# stopped at the deadline: {len(todo) - finished} runs left; run again to resume from {cache}"
        )
        return
    grids = ["grid-sgd", "grid-adam"] if args.adam_grid else ["grid-sgd"]
    results = {g: analyse(rows, lrs if g == "grid-sgd" else ADAM_LRS, args.seeds, g) for g in grids}
    for g, res in results.items():
        report(res, rows, g)
    print(f"fidelity_spearman: {results['grid-sgd']['screeners']['alrao-sgd']['spearman']:.3f}")


def report(res: dict[str, Any], rows: list[dict[str, Any]], grid: str) -> None:
    print(f"\n## ground truth: {grid} (best rate, mean of seeds)")
    print(
        f"{'arch':<18} {'truth val_loss':>14} {'best lr':>8} {'alrao':>8} {'adam':>8} {'alrao pref lr':>13}"
    )
    by = {(r["arch"], r["screener"]): r for r in rows if r["seed"] == 0}
    for a in res["archs"]:
        print(
            f"{a:<18} {res['truth'][a]:>14.4f} {res['truth_lr'][a]:>8g} "
            f"{res['screeners']['alrao-sgd']['scores'][a]:>8.4f} "
            f"{res['screeners']['adam@1e-3']['scores'][a]:>8.4f}"
            f" {by[(a, 'alrao-sgd')]['preferred_lr'] or 0:>13.3g}"
        )
    if res["capped"]:
        print(f"# best rate at the epoch cap for: {', '.join(res['capped'])}")
    if "noise_ceiling_spearman" in res:
        print(f"noise ceiling (grid seed 0 vs seed 1): spearman {res['noise_ceiling_spearman']:.3f}")
    print(f"{'screener':<18} {'spearman':>8} {'kendall':>8} {'regret':>8} {'acc gap pp':>10} {'grid/own':>9}")
    for label, sc in res["screeners"].items():
        print(
            f"{label:<18} {sc['spearman']:>8.3f} {sc['kendall']:>8.3f} {sc['top1_regret']:>8.4f} "
            f"{sc['mean_abs_acc_gap_pp']:>10.2f} {sc['compute_ratio']:>9.1f}"
        )
    spread = {k: v["spearman_seeds"] for k, v in res["screeners"].items() if "spearman_seeds" in v}
    for label, values in spread.items():
        mean = sum(values) / len(values)
        sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
        shown = ", ".join(f"{v:.3f}" for v in values)
        print(f"{label:<18} spearman over {len(values)} seeds: {mean:.3f} ± {sd:.3f} ({shown})")


if __name__ == "__main__":
    main()

"""Accuracy of training at each tuner's recommended rate vs the best rate of an SGD grid.

For each architecture (example specs on their datasets): a plain-SGD grid over ``--lrs``
(7 log-spaced rates by default), the best rate chosen by mean validation loss over the seeds;
then each tuner runs once per seed from ``--init-lr`` and plain SGD is retrained from scratch at
its recommended rate (Ag-Adam's rate retrains Adam). Reference learning-rate-free methods
(D-Adaptation's ``DAdaptSGD`` and ``Prodigy``, lr = 1, as their authors recommend) are trained
directly. All runs share one budget (``--epochs``, early stopping ``--patience``), and metrics are
those of the best validation epoch. The gap is (best-grid test accuracy − method test accuracy)
in percentage points, averaged over ``--seeds`` seeds; negative means the method beat the grid.

Last line: ``fd2_worst_gap_pp: X`` (fd2 retrained at its recommended rate, worst architecture).

``--adam``: the Adam tuners against an **Adam grid** (``--adam-lrs``, 7 log-spaced rates over the
Alrao-Adam range by default). Per architecture and seed: an Alrao-Adam screening (the service's
default screener, same budget) gives the Switch posterior; ``fd2-adam`` runs from each of the
posterior's 25th/50th/75th percentiles (``posterior_starts``), Adam is retrained at each run's
recommended rate, and the best-of-3 keeps the start whose *tuning run* had the lowest validation
loss (what the service can see). ``ag-adam`` (the previous promotion default) runs from the
posterior's median for comparison. Columns: each start alone, the median plus one other start,
all three, and how often each start was picked. Runs are cached in ``--cache`` (JSON lines, one
per run; a rerun with the same settings skips them). Last line: ``fd2_adam_worst_gap_pp: X``
(best-of-3, worst architecture).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line
from fidelity_screeners import FreeRateScreener

from archscreen.core.names import TUNER_NAMES
from archscreen.core.screening import FixedRateScreener, screening_run
from archscreen.core.spec import parse_spec
from archscreen.core.tuning import get_tuner, posterior_starts

ROOT = Path(__file__).resolve().parents[1]
ARCHS = ["logistic_regression", "mlp", "lenet5", "resnet_small", "mobilenet_small", "gru_classifier"]
TUNED: list[str] = list(TUNER_NAMES)
REFERENCES = ["dadapt-sgd", "prodigy"]


def _dataset(arch: str) -> str:
    first = (ROOT / "examples" / f"{arch}.yaml").read_text().splitlines()[0]
    return first.split(":", 1)[1].strip()


def _job(job: tuple[str, str, float | None, int, dict[str, Any]]) -> dict[str, Any]:
    arch, method, lr, seed, cfg = job
    method, _, tag = method.partition("|")  # "fd2-adam|q25": the start a tuning run came from
    torch.set_num_threads(1)
    spec = parse_spec(ROOT / "examples" / f"{arch}.yaml")
    # the screening's run as the service makes it (core.screening.screening_run): the default
    # screener under this bench's budget; the tuners train under the same budget
    budget = {k: v for k, v in cfg.items() if k not in ("fd2_options", "compare_options", "fd2_resolved")}
    sc, config = screening_run(budget, seed=seed)
    dataset = _dataset(arch)
    if method == "alrao-adam":
        r = sc.screen(spec, dataset, config)
        return {
            "arch": arch,
            "method": method,
            "seed": seed,
            "switch_posterior": r.switch_posterior,
            "lr_range": list(sc.settings(r.task)[:2]),
            "val": r.val_loss,
            "acc": r.test_accuracy,
        }
    if method in ("grid", "adam-grid"):
        assert lr is not None
        opt = "adam" if method == "adam-grid" else "sgd"
        r = FixedRateScreener(lr=lr, optimizer=opt).screen(spec, dataset, config)  # type: ignore[arg-type]
        return {
            "arch": arch,
            "method": method,
            "lr": lr,
            "seed": seed,
            "val": r.val_loss,
            "acc": r.test_accuracy,
        }
    if method in REFERENCES:
        r = FreeRateScreener(method).screen(spec, dataset, config)
        return {
            "arch": arch,
            "method": method,
            "lr": None,
            "seed": seed,
            "val": r.val_loss,
            "acc": r.test_accuracy,
        }
    if method == "fd2*":
        tuner = get_tuner("fd2", **cfg["compare_options"])
    else:
        tuner = get_tuner(method, **(cfg.get("fd2_options", {}) if method in ("fd2", "fd2-adam") else {}))
    t = tuner.tune(spec, dataset, lr, config)
    rec = t.recommended_lr
    out: dict[str, Any] = {
        "arch": arch,
        "method": method,
        "tag": tag,
        "seed": seed,
        "init_lr": lr,
        "lr": rec,
        "tuned_acc": t.test_accuracy,
        "tuned_val": t.val_loss,
        "best_epoch": t.best_epoch,
    }
    if not (rec > 0 and math.isfinite(rec)):
        out.update(val=math.inf, acc=0.0)
        return out
    base = "adam" if tuner.base_optimizer == "adam" else "sgd"
    r = FixedRateScreener(lr=rec, optimizer=base).screen(spec, dataset, config)  # type: ignore[arg-type]
    out.update(val=r.val_loss, acc=r.test_accuracy)
    return out


def _start(method: str, init_lr: float) -> float:
    """``--init-lr`` for SGD tuners; an Adam tuner (ag-adam, fd2-adam) starts at Adam's 1e-3."""
    tuner = get_tuner("fd2" if method == "fd2*" else method)
    return tuner.default_init_lr() if tuner.base_optimizer == "adam" else init_lr


def _parse_options(text: str, flag: str = "--fd2", tuner: str = "fd2") -> dict[str, Any]:
    """``"max_change=2,recommend=tail,eval_dtype=none"`` -> keyword arguments of ``FD2Tuner``,
    checked by building one (a bad key or value exits with one line naming ``flag``)."""
    out: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"{flag}: expected KEY=VALUE, got {item!r}")
        value: Any
        if raw.lower() in ("none", "true", "false"):
            value = {"none": None, "true": True, "false": False}[raw.lower()]
        elif raw in ("float64", "float32"):
            value = getattr(torch, raw)
        else:
            try:
                value = int(raw) if raw.lstrip("-").isdigit() else float(raw)
            except ValueError:
                value = raw
        out[key.strip()] = value
    try:
        get_tuner(tuner, **out)
    except (TypeError, ValueError) as exc:
        raise SystemExit(f"{flag}: {exc}") from None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--lrs", default="0.001,0.003,0.01,0.03,0.1,0.3,1.0")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--init-lr", type=float, default=0.01, help="tuners' initial rate (Ag-Adam: 1e-3)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--fd2",
        default="",
        metavar="KEY=VALUE,...",
        help="FD2Tuner options to measure instead of its defaults, e.g. 'max_change=2,recommend=tail'",
    )
    parser.add_argument(
        "--compare-fd2",
        default="",
        metavar="KEY=VALUE,...",
        help="also measure fd2 with these options, as column fd2* (e.g. the previous defaults)",
    )
    parser.add_argument(
        "--methods",
        default=",".join([*TUNED, *REFERENCES]),
        help="tuners and reference methods to measure (the SGD grid always runs)",
    )
    parser.add_argument(
        "--adam", action="store_true", help="the Adam tuners against an Adam grid (see above)"
    )
    parser.add_argument("--adam-lrs", default="0.0001,0.0003,0.001,0.003,0.01,0.03,0.1")
    parser.add_argument("--cache", type=Path, default=None, help="--adam: JSON-lines cache of finished runs")
    args = parser.parse_args()
    if args.adam:
        adam_main(args)
        return
    chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(chosen) - set(TUNED) - set(REFERENCES))
    if unknown:
        parser.error(f"unknown methods {unknown}; known: {[*TUNED, *REFERENCES]}")
    archs = args.archs.split(",")
    lrs = [float(v) for v in args.lrs.split(",")]
    cfg: dict[str, Any] = {
        "max_epochs": args.epochs,
        "patience": args.patience,
        "batch_size": args.batch_size,
    }
    fd2_options = _parse_options(args.fd2)
    if fd2_options:
        cfg["fd2_options"] = fd2_options
    tuned = [m for m in TUNED if m in chosen]
    references = [m for m in REFERENCES if m in chosen]
    if args.compare_fd2:
        cfg["compare_options"] = _parse_options(args.compare_fd2, "--compare-fd2")
        tuned.insert(1, "fd2*")
    jobs: list[tuple[str, str, float | None, int, dict[str, Any]]] = []
    for arch in archs:
        for s in range(args.seeds):
            jobs += [(arch, "grid", lr, s, cfg) for lr in lrs]
            jobs += [(arch, m, _start(m, args.init_lr), s, cfg) for m in tuned]
            jobs += [(arch, m, None, s, cfg) for m in references]
    print(f"# {machine_line()}; {args.workers} worker processes, 1 thread each")
    print(
        f"# budget: {args.epochs} epochs (patience {args.patience}), batch {args.batch_size}, "
        f"{args.seeds} seeds; SGD grid {lrs}; tuners start at {args.init_lr:g} (ag-adam 1e-3)"
    )
    fd2 = get_tuner("fd2", **fd2_options)
    print(
        "# fd2: "
        + ", ".join(
            f"{k}={getattr(fd2, k)}"
            for k in ("max_change", "eval_dtype", "recommend", "every", "eval_samples", "eval_batch", "guard")
        )
        + (f"; fd2*: {args.compare_fd2}" if args.compare_fd2 else "")
    )
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        results = list(pool.map(_job, jobs))
    rows: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in results:
        rows.setdefault(r["arch"], {}).setdefault(r["method"], []).append(r)
    methods = [*tuned, *references]
    print(
        f"{'arch':<20} {'best lr':>8} {'grid acc':>8} {'spread':>7} " + " ".join(f"{m:>16}" for m in methods)
    )
    worst = -math.inf
    for arch in archs:
        grid = rows[arch]["grid"]
        by_lr: dict[float, list[dict[str, Any]]] = {}
        for r in grid:
            by_lr.setdefault(r["lr"], []).append(r)

        def mean_val(lr: float, by_lr: dict[float, list[dict[str, Any]]] = by_lr) -> float:
            vals = [x["val"] if math.isfinite(x["val"]) else math.inf for x in by_lr[lr]]
            return sum(vals) / len(vals)

        best = min(by_lr, key=mean_val)
        grid_acc = statistics.mean(x["acc"] for x in by_lr[best])
        # the seed-to-seed range of the best grid rate's accuracy: a gap smaller than this is noise
        spread = 100 * (max(x["acc"] for x in by_lr[best]) - min(x["acc"] for x in by_lr[best]))
        cells = []
        for m in methods:
            acc = statistics.mean(x["acc"] for x in rows[arch][m])
            gap = 100 * (grid_acc - acc)
            if m in REFERENCES:
                cells.append(f"{gap:>+7.2f}pp {'':>7}")
            else:
                lr = math.exp(statistics.mean(math.log(max(x["lr"], 1e-12)) for x in rows[arch][m]))
                cells.append(f"{gap:>+7.2f}pp@{lr:<7.3g}")
            if m == "fd2":
                worst = max(worst, gap)
        print(
            f"{arch:<20} {best:>8g} {100 * grid_acc:>7.2f}% {spread:>5.1f}pp "
            + " ".join(f"{c:>16}" for c in cells),
            flush=True,
        )
    print("# own-run test accuracy of each tuner (the tuning run itself, %):")
    for arch in archs:
        own = " ".join(
            f"{m}={100 * statistics.mean(x['tuned_acc'] for x in rows[arch][m]):.2f}" for m in tuned
        )
        print(f"#   {arch:<20} {own}")
    print(f"# {len(jobs)} runs in {time.perf_counter() - t0:.0f} s")
    print(f"fd2_worst_gap_pp: {worst:.2f}")


FD2_SETTINGS = ("eps", "relative_eps", "max_change", "eval_dtype", "recommend", "every", "eval_samples",
                "eval_batch", "curvature_guard", "finite_guard", "momentum", "average", "guard")  # fmt: skip
STARTS = ("q25", "q50", "q75")  # posterior_starts' default quantiles, in order


def _cached_pool(
    jobs: list[tuple[str, str, float | None, int, dict[str, Any]]], workers: int, cache: Path | None
) -> list[dict[str, Any]]:
    """Run ``jobs`` (skipping those in ``cache``), appending each result to ``cache`` as it ends."""
    import json

    def key(j: tuple[str, str, float | None, int, dict[str, Any]]) -> str:
        # fd2-adam's settings (its defaults resolved, so a changed default is a new run) key only
        # the fd2-adam runs: the grid, screenings and ag-adam runs are shared across variants
        cfg = {k: v for k, v in j[4].items() if k not in ("fd2_options", "fd2_resolved")}
        if j[1].startswith("fd2-adam"):
            cfg["fd2_resolved"] = j[4].get("fd2_resolved")
        return json.dumps([j[0], j[1], j[2], j[3], cfg], sort_keys=True)

    done: dict[str, dict[str, Any]] = {}
    if cache is not None and cache.exists():
        for line in cache.read_text().splitlines():
            rec = json.loads(line)
            done[rec["key"]] = rec["result"]
    todo = [j for j in jobs if key(j) not in done]
    if todo:
        with ProcessPoolExecutor(workers) as pool:
            for j, r in zip(todo, pool.map(_job, todo), strict=True):
                done[key(j)] = r
                if cache is not None:
                    cache.parent.mkdir(parents=True, exist_ok=True)
                    with cache.open("a") as f:
                        f.write(json.dumps({"key": key(j), "result": r}) + "\n")
    return [done[key(j)] for j in jobs]


def adam_main(args: argparse.Namespace) -> None:
    """Adam grid vs fd2-adam from the Alrao-Adam posterior's quartiles (and ag-adam from its median)."""
    archs = args.archs.split(",")
    lrs = [float(v) for v in args.adam_lrs.split(",")]
    cfg: dict[str, Any] = {
        "max_epochs": args.epochs,
        "patience": args.patience,
        "batch_size": args.batch_size,
    }
    fd2_options = _parse_options(args.fd2, "--fd2", "fd2-adam")
    if fd2_options:
        cfg["fd2_options"] = fd2_options
    t = get_tuner("fd2-adam", **fd2_options)
    settings = ", ".join(f"{k}={getattr(t, k)}" for k in FD2_SETTINGS)
    cfg["fd2_resolved"] = settings
    print(f"# {machine_line()}; {args.workers} worker processes, 1 thread each")
    print(f"# fd2-adam: {settings}" + (f" (--fd2 {args.fd2})" if args.fd2 else ""))
    print(
        f"# budget: {args.epochs} epochs (patience {args.patience}), batch {args.batch_size}, "
        f"{args.seeds} seeds; Adam grid {lrs}; fd2-adam from the Alrao-Adam posterior's "
        "25/50/75th percentiles, ag-adam from its median"
    )
    t0 = time.perf_counter()
    Job = tuple[str, str, float | None, int, dict[str, Any]]
    first: list[Job] = [(a, "alrao-adam", None, s, cfg) for a in archs for s in range(args.seeds)]
    first += [(a, "adam-grid", lr, s, cfg) for a in archs for s in range(args.seeds) for lr in lrs]
    res1 = _cached_pool(first, args.workers, args.cache)
    screens = {(r["arch"], r["seed"]): r for r in res1 if r["method"] == "alrao-adam"}
    second: list[Job] = []
    starts: dict[tuple[str, int], list[float]] = {}
    for (a, s), r in screens.items():
        st = posterior_starts(r, lr_range=tuple(r["lr_range"]))
        if len(st) < len(STARTS):  # equal quartiles (clipped at the range's end): run each once anyway
            st = (st * 3)[: len(STARTS)]
        starts[(a, s)] = st
        second += [(a, f"fd2-adam|{q}", lr, s, cfg) for q, lr in zip(STARTS, st, strict=True)]
        second.append((a, "ag-adam|q50", st[1], s, cfg))
    res2 = _cached_pool(second, args.workers, args.cache)
    combos = {"q25": ("q25",), "q50": ("q50",), "q75": ("q75",), "q50+q25": ("q50", "q25"),
              "q50+q75": ("q50", "q75"), "best-of-3": STARTS}  # fmt: skip
    header = f"{'arch':<20} {'adam lr':>8} {'grid acc':>8} {'spread':>7} {'starts (seed 0)':>26} "
    header += " ".join(f"{c:>17}" for c in combos) + f" {'ag-adam@q50':>17} {'picked':>12}"
    print(header)
    worst: dict[str, float] = dict.fromkeys(combos, -math.inf)
    own: list[str] = []
    for arch in archs:
        by_lr: dict[float, list[dict[str, Any]]] = {}
        for r in res1:
            if r["arch"] == arch and r["method"] == "adam-grid":
                by_lr.setdefault(r["lr"], []).append(r)

        def mean_val(lr: float, by_lr: dict[float, list[dict[str, Any]]] = by_lr) -> float:
            vals = [x["val"] if math.isfinite(x["val"]) else math.inf for x in by_lr[lr]]
            return sum(vals) / len(vals)

        best = min(by_lr, key=mean_val)
        grid_acc = statistics.mean(x["acc"] for x in by_lr[best])
        spread = 100 * (max(x["acc"] for x in by_lr[best]) - min(x["acc"] for x in by_lr[best]))
        runs = {(r["seed"], r["tag"]): r for r in res2 if r["arch"] == arch and r["method"] == "fd2-adam"}
        cells, picked = [], dict.fromkeys(STARTS, 0)
        for name, tags in combos.items():
            accs, rates = [], []
            for s in range(args.seeds):
                pick = min(
                    (runs[(s, t)] for t in tags),
                    key=lambda x: x["tuned_val"] if math.isfinite(x["tuned_val"]) else math.inf,
                )
                accs.append(pick["acc"])
                rates.append(max(pick["lr"], 1e-12))
                if name == "best-of-3":
                    picked[pick["tag"]] += 1
            gap = 100 * (grid_acc - statistics.mean(accs))
            worst[name] = max(worst[name], gap)
            lr = math.exp(statistics.mean(math.log(x) for x in rates))
            cells.append(f"{gap:>+7.2f}pp@{lr:<7.3g}")
        ag = [r for r in res2 if r["arch"] == arch and r["method"] == "ag-adam"]
        ag_gap = 100 * (grid_acc - statistics.mean(r["acc"] for r in ag))
        ag_lr = math.exp(statistics.mean(math.log(max(r["lr"], 1e-12)) for r in ag))
        st0 = "/".join(f"{x:.2g}" for x in starts[(arch, 0)])
        pk = "/".join(str(picked[t]) for t in STARTS)
        print(
            f"{arch:<20} {best:>8g} {100 * grid_acc:>7.2f}% {spread:>5.1f}pp {st0:>26} "
            + " ".join(f"{c:>17}" for c in cells)
            + f" {ag_gap:>+7.2f}pp@{ag_lr:<7.3g} {pk:>12}",
            flush=True,
        )
        own.append(
            f"#   {arch:<20} "
            + " ".join(
                f"{t}={100 * statistics.mean(runs[(s, t)]['tuned_acc'] for s in range(args.seeds)):.2f}"
                f"(best epoch {'/'.join(str(runs[(s, t)]['best_epoch']) for s in range(args.seeds))})"
                for t in STARTS
            )
        )
    print("# own-run test accuracy of each fd2-adam start (the tuning run itself, %), best epoch per seed:")
    print("\n".join(own))
    print("# picked: how often the best-of-3 picked the q25/q50/q75 start (by the tuning run's val loss)")
    n = len(first) + len(second)
    print(f"# {n} runs (tuning runs count once; each also retrains Adam) in {time.perf_counter() - t0:.0f} s")
    print("# worst gap by start set: " + ", ".join(f"{k} {v:+.2f}pp" for k, v in worst.items()))
    print(f"fd2_adam_median_worst_gap_pp: {worst['q50']:.2f}")
    print(f"fd2_adam_worst_gap_pp: {worst['best-of-3']:.2f}")


if __name__ == "__main__":
    main()

"""Tables of the budget study (``bench/fidelity_budget.py``): the selection-half sweep and the
choice by the rule written in docs/fidelity.md, the chosen budget held out against Adam at 1e-3
under the same budget, what to rank by (issue 27 item 3) and a split-conformal interval on the
relative error (item 4)."""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path
from typing import Any

from fidelity import (
    ROOT,
    SGD_LRS,
    adam_lrs,
    best_of_both,
    load_rows,
    metrics,
    pool_of,
    truth_for,
)
from fidelity_budget import BudgetRule, product_estimate, read_budget
from fidelity_suites import BUDGETS
from scipy import stats

CACHES = [ROOT / "docs" / "data" / "fidelity-ii.jsonl", ROOT / "docs" / "data" / "fidelity-full.jsonl"]
SELECTION_DATASETS = ("digits", "mnist1d", "chartext")
SPEARMAN_DATASETS = ("mnist1d", "chartext")  # digits' selection half has two nets: a rank of two is +-1
E_NOISE_FLOOR = 0.25  # percentage points
S_NOISE = 0.05  # about two swapped neighbours among MNIST-1D's eight selection nets
CONFORMAL_LEVEL = 0.9


def truths(suites: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Best-of-both truth per dataset (all architectures) from the studies' committed caches."""
    configs = {ds: dict(BUDGETS[ds]) for ds in suites}
    rows = {(r["dataset"], r["arch"], r["screener"], r["seed"]): r for r in load_rows(CACHES, configs)}
    out = {}
    for ds, suite in suites.items():
        archs = list(suite)
        sgd = truth_for(rows, ds, archs, "grid-sgd", SGD_LRS.get(ds, SGD_LRS["default"]), 2)
        adam = truth_for(rows, ds, archs, "grid-adam", adam_lrs(ds), 2)
        t = best_of_both(sgd, adam, archs)
        t["adam_lr"] = adam["lr"]
        t["adam_grid_steps"] = {
            a: sum(rows[(ds, a, f"grid-adam@{lr:g}", s)]["steps"] for lr in adam_lrs(ds) for s in range(2))
            for a in archs
        }
        out[ds] = t
    return out


def budget_rows(
    long_rows: list[dict[str, Any]], rules_by_ds: dict[str, list[BudgetRule]]
) -> dict[tuple, dict]:
    """Every (dataset, arch, kind, seed, rule) a long run supports, read off it."""
    out = {}
    for lr in long_rows:
        for rule in rules_by_ds.get(lr["dataset"], []):
            b = read_budget(lr, rule)
            if b is not None:
                out[(lr["dataset"], lr["arch"], lr["kind"], lr["seed"], rule.name)] = b
    return out


def cell(
    br: dict[tuple, dict],
    truth: dict[str, Any],
    ds: str,
    archs: list[str],
    kind: str,
    rule: str,
    signal: str = "val_loss",
) -> dict[str, Any] | None:
    """Metrics of one budget on one dataset's pool, per seed and their mean (None if incomplete)."""
    per_seed = []
    for s in (0, 1):
        maybe = [br.get((ds, a, kind, s, rule)) for a in archs]
        got = [g for g in maybe if g is not None]
        if len(got) < len(archs):
            continue
        sc = {
            "score": {a: g[signal] for a, g in zip(archs, got, strict=True)},
            "test": {a: g["test"] for a, g in zip(archs, got, strict=True)},
            "steps": sum(g["steps"] for g in got),
            "seconds": sum(g["cpu_seconds"] for g in got),
        }
        m = metrics(truth, sc, archs, ds)
        m["cpu"], m["steps"] = sc["seconds"], sc["steps"]
        m["rel_by_arch"] = {
            a: 100 * abs(g["test"] - truth["test"][a]) / abs(truth["test"][a])
            for a, g in zip(archs, got, strict=True)
        }
        m["hint"] = [
            abs(math.log10(g["preferred_lr"] / truth["adam_lr"][a]))
            for a, g in zip(archs, got, strict=True)
            if g.get("preferred_lr")
        ]
        per_seed.append(m)
    if not per_seed:
        return None
    keys = ("spearman", "spearman_test", "estimate_error", "estimate_rel", "cpu", "steps")
    agg: dict[str, Any] = {k: statistics.fmean(m[k] for m in per_seed) for k in keys}
    agg["seeds"] = per_seed
    hints = [h for m in per_seed for h in m["hint"]]
    agg["hint"] = statistics.median(hints) if hints else None
    return agg


def selection_table(
    br: dict[tuple, dict], tr: dict[str, dict[str, Any]], suites: dict[str, dict[str, Any]], rules: list[str]
) -> dict[str, dict[str, Any]]:
    """Per budget: E, E per seed, S, CPU-seconds and steps over the selection half (complete only)."""
    out: dict[str, dict[str, Any]] = {}
    for rule in rules:
        cells = {}
        for ds in SELECTION_DATASETS:
            archs = [a for a in suites.get(ds, {}) if pool_of(ds, a) == "selection"]
            c = cell(br, tr[ds], ds, archs, "alrao", rule) if archs else None
            if c is None or len(c["seeds"]) < 2:
                break
            cells[ds] = c
        else:
            e_seed = [statistics.fmean(cells[d]["seeds"][s]["estimate_rel"] for d in cells) for s in (0, 1)]
            out[rule] = {
                "E": statistics.fmean(e_seed),
                "E_seeds": e_seed,
                "S": statistics.fmean(cells[d]["spearman"] for d in SPEARMAN_DATASETS),
                "E_uncapped": _e_uncapped(cells, tr),
                "C": sum(cells[d]["cpu"] for d in cells) * 2,  # cell cpu is the mean of the two seeds
                "steps": sum(cells[d]["steps"] for d in cells) * 2,
                "cells": cells,
            }
    return out


def _e_uncapped(cells: dict[str, dict[str, Any]], tr: dict[str, dict[str, Any]]) -> float:
    """E over the nets whose best-rate run did not reach the grid's epoch cap (a sensitivity check:
    a longer budget is measured against truths trained under today's)."""
    per_ds = []
    for ds, c in cells.items():
        xs = [v for m in c["seeds"] for a, v in m["rel_by_arch"].items() if a not in tr[ds]["capped"]]
        if xs:
            per_ds.append(statistics.fmean(xs))
    return statistics.fmean(per_ds) if per_ds else math.nan


def choose(table: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The rule of docs/fidelity.md: the cheapest budget within noise of the lowest E and of the best S."""
    best = min(table, key=lambda r: table[r]["E"])
    noise = max(abs(table[best]["E_seeds"][0] - table[best]["E_seeds"][1]) / 2, E_NOISE_FLOOR)
    s_max = max(t["S"] for t in table.values())
    ok = [r for r, t in table.items() if t["E"] <= table[best]["E"] + noise and t["S"] >= s_max - S_NOISE]
    chosen = min(ok, key=lambda r: (table[r]["C"], table[r]["steps"]))
    return chosen, {"best_E": best, "noise": noise, "S_max": s_max, "eligible": ok}


def _rank_signals(b: dict[str, Any]) -> dict[str, float]:
    """Ranking scores (lower = better) of one budget's run for item 3."""
    return {
        "Switch model's val loss (today)": b["val_loss"],
        "best output copy's val loss": b["best_copy_val_loss"]
        if b["best_copy_val_loss"] is not None
        else math.inf,
        "val loss at the last epoch": b["last_val_loss"],
        "extrapolated estimate (the product's)": _oriented(b),
    }


def _oriented(b: dict[str, Any]) -> float:
    """The estimate as a lower-is-better score (accuracy negated)."""
    est = product_estimate(b)
    if est is None or not math.isfinite(est):
        return math.inf
    return -est if b["dataset"] not in ("chartext", "regression") else est


def ranking_table(
    br: dict[tuple, dict],
    tr: dict[str, dict[str, Any]],
    suites: dict[str, dict[str, Any]],
    rule: str,
    pools: tuple[str, ...],
) -> dict[str, dict[str, float]]:
    """Validation-loss Spearman against the truth per ranking signal and dataset (mean of seeds)."""
    out: dict[str, dict[str, list[float]]] = {}
    for ds, suite in suites.items():
        archs = [a for a in suite if pool_of(ds, a) in pools]
        if len(archs) < 3:
            continue
        for s in (0, 1):
            got = [g for g in (br.get((ds, a, "alrao", s, rule)) for a in archs) if g is not None]
            if len(got) < len(archs):
                continue
            sig = [_rank_signals(g) for g in got]
            for name in sig[0]:
                rho = stats.spearmanr([x[name] for x in sig], [tr[ds]["val"][a] for a in archs]).statistic
                out.setdefault(name, {}).setdefault(ds, []).append(float(rho))
    return {n: {d: statistics.fmean(v) for d, v in per.items()} for n, per in out.items()}


def conformal(
    br: dict[tuple, dict], tr: dict[str, dict[str, Any]], suites: dict[str, dict[str, Any]], rule: str
) -> dict[str, Any]:
    """Split-conformal interval on the relative error |truth − estimate| / |estimate|, fitted on the
    selection half, its coverage per dataset on the report half and the new architectures."""

    def rel(pools: tuple[str, ...]) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for (ds, a, kind, _s, r), b in br.items():
            if (
                kind == "alrao"
                and r == rule
                and pool_of(ds, a) in pools
                and math.isfinite(b["test"])
                and b["test"]
            ):
                out.setdefault(ds, []).append(abs(tr[ds]["test"][a] - b["test"]) / abs(b["test"]))
        return out

    cal = sorted(x for xs in rel(("selection",)).values() for x in xs)
    k = math.ceil((len(cal) + 1) * CONFORMAL_LEVEL)
    q = cal[k - 1] if k <= len(cal) else math.inf
    held = rel(("report", "new"))
    return {
        "n": len(cal),
        "q": q,
        "coverage": {ds: sum(x <= q for x in xs) / len(xs) for ds, xs in held.items()},
        "n_held": {ds: len(xs) for ds, xs in held.items()},
    }


def report(
    long_rows: list[dict[str, Any]],
    suites: dict[str, dict[str, Any]],
    rules_by_ds: dict[str, list[BudgetRule]],
    args: argparse.Namespace,
) -> list[str]:
    from fidelity_budget_tables import markdown

    tr = truths(suites)
    br = budget_rows(long_rows, rules_by_ds)
    names = [r.name for r in next(iter(rules_by_ds.values()))]
    table = selection_table(br, tr, suites, names)
    if not table:
        return ["# no complete selection-half budget yet"]
    chosen, why = choose(table)
    md = markdown(br, tr, suites, table, chosen, why)
    if args.markdown:
        Path(args.markdown).write_text("\n".join(md) + "\n")
    if getattr(args, "plots", None):
        from fidelity_budget_tables import plot

        plot(table, chosen, Path(args.plots) / "fidelity-budget.png")
    today = table["today"]
    return [
        *md[-6:],
        f"fidelity_budget_chosen: {chosen}, selection-half estimate error {table[chosen]['E']:.2f} % "
        f"(today {today['E']:.2f} %), CPU {table[chosen]['C'] / today['C']:.2f}x today's",
    ]


def offline_ranking(
    suites: dict[str, dict[str, Any]], tr: dict[str, dict[str, Any]]
) -> dict[str, dict[str, float]]:
    """Item 3 on study II's committed cache alone (no new runs): the default's curve-logging rerun
    on the selection half (seed 0; the only selection-half default lines with a curve), ranked by
    the Switch model's validation loss, the extrapolated estimate (the product's setting:
    exponential saturation read at the budget's cap), and the validation loss at the last epoch.
    The cache has no per-copy losses: the best copy is measured on the long runs only."""
    from fidelity import _cap_steps, extrapolated_test

    configs = {ds: dict(BUDGETS[ds]) for ds in suites}
    rows = {(r["dataset"], r["arch"], r["screener"], r["seed"]): r for r in load_rows(CACHES, configs)}
    out: dict[str, dict[str, float]] = {}
    for ds, suite in suites.items():
        archs = [a for a in suite if pool_of(ds, a) == "selection"]
        got = [rows.get((ds, a, "alrao-adam[1e-4..0.1]+curvelog", 0)) for a in archs]
        if len(archs) < 3 or any(g is None or not g.get("curve") for g in got):
            continue
        sign = 1.0 if ds in ("chartext", "regression") else -1.0
        signals: dict[str, list[float]] = {
            "Switch model's val loss (today)": [],
            "val loss at the last epoch": [],
        }
        signals["extrapolated estimate (exp-saturation @ cap)"] = []
        for g in got:
            assert g is not None
            signals["Switch model's val loss (today)"].append(g["val_loss"])
            signals["val loss at the last epoch"].append(g["curve"]["val_loss"][-1])
            est = extrapolated_test(g, ds, "exp-saturation", 1.0, _cap_steps(g))
            signals["extrapolated estimate (exp-saturation @ cap)"].append(sign * est[0] if est else math.inf)
        truth = [tr[ds]["val"][a] for a in archs]
        for name, xs in signals.items():
            out.setdefault(name, {})[ds] = float(stats.spearmanr(xs, truth).statistic)
    return out

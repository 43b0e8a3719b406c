"""Markdown and the plot of the budget study (``bench/fidelity_budget.py``)."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from fidelity import pool_of
from fidelity_budget_report import cell, conformal, offline_ranking, ranking_table

UNITS = {"chartext": "bpc", "regression": "MSE"}
HELD_POOLS = {"new": ("new",), "report": ("report",), "report+new": ("report", "new")}


def _f(x: float | None, nd: int = 3) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


def selection_md(table: dict[str, dict[str, Any]], chosen: str, why: dict[str, Any]) -> list[str]:
    today = table["today"]
    md = [
        "### Selection half: every budget (Alrao-Adam default, 2 seeds, best-of-both truth)",
        "",
        "E: mean relative estimate error over digits, MNIST-1D, chartext; S: mean validation-loss "
        "Spearman over MNIST-1D and chartext; CPU: process CPU-seconds of all 26 selection runs.",
        "",
        "| budget | E (seed 0 / 1) | S | digits est. | MNIST-1D ρ / est. | chartext ρ / est. "
        "| CPU-s (× today) | steps (× today) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, t in sorted(table.items(), key=lambda kv: kv[1]["C"]):
        c = t["cells"]
        mark = "**" if name == chosen else ""
        e = f"{t['E']:.2f} % ({t['E_seeds'][0]:.2f} / {t['E_seeds'][1]:.2f})"
        mn, ch = c["mnist1d"], c["chartext"]
        md.append(
            f"| {mark}{name}{mark} | {e} | {t['S']:.3f} | {c['digits']['estimate_error']:.2f} pp "
            f"| {mn['spearman']:.3f} / {mn['estimate_error']:.2f} pp "
            f"| {ch['spearman']:.3f} / {ch['estimate_error']:.3f} bpc "
            f"| {t['C']:.0f} ({t['C'] / today['C']:.2f}×) "
            f"| {t['steps']:.0f} ({t['steps'] / today['steps']:.2f}×) |"
        )
    md += [
        "",
        f"Lowest E: `{why['best_E']}` ({table[why['best_E']]['E']:.2f} %, noise ±{why['noise']:.2f} pp); "
        f"best S {why['S_max']:.3f}. Within noise of both: {', '.join(f'`{r}`' for r in why['eligible'])}. "
        f"**Chosen (cheapest of them): `{chosen}`**.",
        "",
        "Sensitivity (not the rule): E over the nets whose truth did not reach the grid's epoch cap: "
        + ", ".join(
            f"`{n}` {table[n]['E_uncapped']:.2f} %" for n in dict.fromkeys(("today", why["best_E"], chosen))
        )
        + "; lowest: `"
        + min(table, key=lambda n: table[n]["E_uncapped"])
        + "`.",
        "",
    ]
    return md


def heldout_md(br: dict, tr: dict, suites: dict, chosen: str) -> list[str]:
    md = [
        f"### Held out: `{chosen}` against Adam at 1e-3 under the same budget",
        "",
        "Spearman (validation loss / test score) against best-of-both; estimate error (best-epoch test "
        "score against the best-rate one; relative in brackets); rate hint (median decades from the Adam "
        "search's best rate); compute against one Adam grid (its steps; its CPU-seconds estimated as its "
        "steps times the CPU-seconds per step measured on the same net's Adam runs here).",
        "",
        "| pool | dataset (nets) | today: ρ / est. | chosen: ρ / est. | adam@1e-3 same budget: ρ / est. "
        "| hint | Adam grid / own steps, CPU-s |",
        "|---|---|---|---|---|---|---|",
    ]
    for pool, pools in HELD_POOLS.items():
        for ds, suite in suites.items():
            archs = [a for a in suite if pool_of(ds, a) in pools]
            row = _heldout_row(br, tr[ds], ds, archs, chosen) if len(archs) >= 2 else None
            if row is not None:
                md.append(f"| {pool} | {ds} ({len(archs)}) | {row} |")
    return [*md, ""]


def _show(c: dict[str, Any] | None, n_archs: int, unit: str) -> str:
    if c is None:
        return "-"
    rho = "-" if n_archs < 3 else f"{c['spearman']:.3f} / {c['spearman_test']:.3f}"
    return f"{rho}; {c['estimate_error']:.3g} {unit} ({c['estimate_rel']:.1f} %)"


def _heldout_row(br: dict, truth: dict, ds: str, archs: list[str], chosen: str) -> str | None:
    """One dataset's cells: today, the chosen budget, Adam under it, the hint, the compute ratios."""
    runs = (("today", "alrao", "today"), ("chosen", "alrao", chosen), ("adam", "adam", chosen))
    cs = {k: cell(br, truth, ds, archs, kind, r) for k, kind, r in runs}
    if cs["chosen"] is None:
        return None
    unit = UNITS.get(ds, "pp")
    ratio = "-"
    per_step = _adam_cpu_per_step(br, ds, archs)
    if per_step is not None:
        grid_steps = sum(truth["adam_grid_steps"][a] for a in archs)
        grid_cpu = sum(truth["adam_grid_steps"][a] * per_step[a] for a in archs)
        ratio = f"{grid_steps / cs['chosen']['steps']:.1f}×, {grid_cpu / cs['chosen']['cpu']:.1f}×"
    shown = " | ".join(_show(cs[k], len(archs), unit) for k in ("today", "chosen", "adam"))
    return f"{shown} | {_f(cs['chosen']['hint'], 2)} | {ratio}"


def _adam_cpu_per_step(br: dict, ds: str, archs: list[str]) -> dict[str, float] | None:
    """CPU-seconds per Adam step per net, from the Adam long runs' (longest budget) rows."""
    out = {}
    for a in archs:
        xs = [
            b["cpu_seconds"] / b["steps"]
            for (d, x, kind, _s, r), b in br.items()
            if d == ds and x == a and kind == "adam" and b["steps"]
        ]
        if not xs:
            return None
        out[a] = statistics.fmean(xs)
    return out


def ranking_md(br: dict, tr: dict, suites: dict, chosen: str) -> list[str]:
    md = [
        "### What to rank by (item 3), validation-loss Spearman against best-of-both, mean of 2 seeds",
        "",
        "| signal | budget | pool | " + " | ".join(suites) + " |",
        "|---|---|---|" + "---|" * len(suites),
    ]
    for name, per in offline_ranking(suites, tr).items():
        md.append(
            f"| {name} | study II cache (seed 0) | selection | "
            + " | ".join(_f(per.get(ds)) for ds in suites)
            + " |"
        )
    for rule in dict.fromkeys(("today", chosen)):
        for pool, pools in (("selection", ("selection",)), ("report+new", ("report", "new"))):
            for name, per in ranking_table(br, tr, suites, rule, pools).items():
                md.append(
                    f"| {name} | {rule} | {pool} | " + " | ".join(_f(per.get(ds)) for ds in suites) + " |"
                )
    return [*md, ""]


def conformal_md(br: dict, tr: dict, suites: dict, chosen: str) -> list[str]:
    md = ["### A split-conformal 90 % interval on the relative error (item 4)", ""]
    for rule in dict.fromkeys(("today", chosen)):
        c = conformal(br, tr, suites, rule)
        cov = ", ".join(f"{ds} {v:.2f} ({c['n_held'][ds]} runs)" for ds, v in c["coverage"].items())
        md.append(
            f"- `{rule}`: fitted on {c['n']} selection-half runs, half-width ±{100 * c['q']:.1f} % of the "
            f"estimate; held-out coverage: {cov or 'no held-out runs yet'}."
        )
    return [*md, ""]


def markdown(br: dict, tr: dict, suites: dict, table: dict, chosen: str, why: dict) -> list[str]:
    return [
        "# Budget study tables (generated by `bench/fidelity_budget.py`; see docs/fidelity.md)",
        "",
        *selection_md(table, chosen, why),
        *heldout_md(br, tr, suites, chosen),
        *ranking_md(br, tr, suites, chosen),
        *conformal_md(br, tr, suites, chosen),
    ]


def plot(table: dict[str, dict[str, Any]], chosen: str, path: Path) -> None:
    """Estimate error against CPU-seconds, one point per budget, the chosen one marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {"patience": "tab:blue", "plateau": "tab:orange", "plateau-nofloor": "tab:green"}
    for name, t in table.items():
        stop = name.rsplit("-", 1)[-1] if name.startswith("cap") else None
        if name.startswith("cap") and name.endswith("nofloor"):
            stop = "plateau-nofloor"
        colour = colours.get(stop or "", "black")
        ax.scatter(
            t["C"],
            t["E"],
            color=colour,
            s=60 if name == chosen else 18,
            marker="*" if name == chosen else "o",
        )
        if not name.startswith("cap") or name == chosen:
            ax.annotate(name, (t["C"], t["E"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    for stop, colour in colours.items():
        ax.scatter([], [], color=colour, s=18, label=f"cap × patience, {stop}")
    ax.set_xlabel("CPU-seconds, all selection-half runs")
    ax.set_ylabel("mean relative estimate error (%)")
    ax.set_title("Budgets on the selection half (star: chosen)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""bench/asha_replay.py: the replay's accounting on hand-made curves, the page section it writes,
and ``--quick`` on a small slice of the committed cache (digits' new architectures)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import asha_replay  # noqa: E402
from asha_replay import Replay, Setting  # noqa: E402


def _curve(losses: list[float], steps: int = 10) -> list[dict[str, Any]]:
    return [{"steps": steps, "val_loss": v, "val_accuracy": 1 - v} for v in losses]


CURVES = {
    "slow-starter": _curve([2.0, 1.5, 0.9, 0.3, 0.2, 0.1, 0.05, 0.04, 0.03]),
    "fast-then-flat": _curve([0.5, 0.45, 0.44, 0.43, 0.42, 0.41, 0.40, 0.40, 0.40]),
    "bad": _curve([3.0, 2.9, 2.8, 2.7, 2.6, 2.5, 2.4, 2.3, 2.2]),
    "stops-early": _curve([1.0, 0.8, 0.9], steps=20),  # its trainer stopped at epoch 3 (patience)
}
FULL_STEPS = 3 * 90 + 60


def test_eta_one_replays_one_full_run_each() -> None:
    replay = Replay(CURVES, "digits", max_epochs=9)
    out = replay.run(Setting(1, 1, "val-loss"), workers=2, order_seed=0)
    assert out["steps"] == FULL_STEPS and out["epochs"] == 30
    full = replay.full_run_each("val-loss")
    assert out["order"] == sorted(full, key=lambda a: full[a])


def test_a_job_costs_only_the_steps_its_run_had_not_trained() -> None:
    replay = Replay(CURVES, "digits", max_epochs=9)
    out = replay.run(Setting(3, 1, "val-loss"), workers=1, order_seed=0)
    # rungs 1, 3, 9: 4 runs at 1 epoch (rung 0 promotes floor(4/3) = 1: fast-then-flat, 0.5),
    # alone at rung 1 (3 epochs), then the leader switch takes it to 9: 9 + 1 + 1 + 1 epochs
    assert out["order"][0] == "fast-then-flat"
    assert out["epochs"] == 12 and out["steps"] == 90 + 10 + 10 + 20
    # ASHA's known failure on a tiny pool: the slow starter (best at the end) was cut at epoch 1
    assert replay.full_run_each("val-loss")["slow-starter"] < replay.value("fast-then-flat", 9, "val-loss")


def test_the_section_is_replaced_and_the_rest_of_the_page_kept(tmp_path: Path) -> None:
    page = tmp_path / "search.md"
    page.write_text("# Architecture search\n\nWritten by hand.\n")
    asha_replay.write_section(page, ["first"])
    asha_replay.write_section(page, ["second"])
    text = page.read_text()
    assert "Written by hand." in text and "second" in text and "first" not in text
    assert text.count(asha_replay.MARK_BEGIN) == 1


def test_quick_replays_a_slice_of_the_cache(tmp_path: Path) -> None:
    page, img = tmp_path / "search.md", tmp_path / "asha.png"
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "asha_replay.py"),
            "--quick",
            "--markdown",
            str(page),
            "--plot",
            str(img),
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    name, fraction, name2, regret = last.split()
    assert (name, name2) == ("asha_compute_fraction:", "regret_pp:")
    assert 0 < float(fraction) < 1 and float(regret) >= 0
    text = page.read_text()
    assert "| new | digits (4 × 2) | full val-loss | 1.00 |" in text
    # one full run each by validation loss is the fidelity study's figure for these nets (0.900)
    assert "| new | digits (4 × 2) | full val-loss | 1.00 | 1.00 | 0 pp | 0.9 |" in text
    assert img.stat().st_size > 1000


def _cell(settings: dict[str, tuple[float, float, float]]) -> dict[str, Any]:
    """A fake selection-half cell: per setting name (compute, regret, Spearman)."""
    return {
        "best": 50.0,
        "settings": {n: {"compute": c, "regret": r, "spearman": s} for n, (c, r, s) in settings.items()},
    }


def test_the_default_is_chosen_by_spearman_then_regret_then_compute() -> None:
    settings = [
        Setting(eta, r, key) for key in ("val-loss", "extrapolated") for eta in (2, 3) for r in (1, 3)
    ]
    by_name = {s.name: (0.5, 1.0, 0.6) for s in settings}
    by_name.update({s.name: (0.5, 1.0, 0.7) for s in settings if s.key == "extrapolated"})
    by_name["η=2 r=3 extrapolated"] = (0.2, 1.0, 0.7)  # as good, cheaper
    by_name["η=3 r=3 extrapolated"] = (0.1, 2.0, 0.7)  # cheapest, but a larger regret
    cells = {("selection", "mnist1d"): _cell(by_name), ("report", "mnist1d"): _cell({})}
    key, default = asha_replay.choose_default(cells, settings)
    assert (key, default) == ("extrapolated", Setting(2, 3, "extrapolated"))
    # a tie in Spearman keeps the validation loss
    flat = {s.name: (0.5, 1.0, 0.6) for s in settings}
    assert asha_replay.choose_default({("selection", "digits"): _cell(flat)}, settings)[0] == "val-loss"

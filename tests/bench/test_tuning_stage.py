"""bench/tuning_stage.py --quick: every option runs, the cache resumes, the summary line's form."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import tuning_stage  # noqa: E402


def test_quick_runs_every_option_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "stage.jsonl"
    assert tuning_stage.main(["--quick", "--cache", str(cache), "--workdir", str(tmp_path / "work")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(
        r"tuning_stage: (multi|posterior-width|screen-weights|halving) [+-]\d+\.\d\d \d+\.\d\d", out[-1]
    )
    rows = [json.loads(line) for line in cache.read_text().splitlines()]
    assert [r["option"] for r in rows] == ["screen", *tuning_stage.OPTIONS]
    by = {r["option"]: r for r in rows}
    assert len(by["multi"]["starts"]) == 3 and all(s["cpu_s"] > 0 for s in by["multi"]["starts"])
    assert by["multi"]["cpu_s"] == pytest.approx(sum(s["cpu_s"] for s in by["multi"]["starts"]))
    # the default's answer is its start with the lowest validation loss
    assert by["multi"]["val_loss"] == min(s["val_loss"] for s in by["multi"]["starts"])
    assert 1 <= by["posterior-width"]["n_starts"] <= 3
    assert by["halving"]["rungs"] == [1, 3, 4]  # 3 starts, eta 3: first rung 4 // 3
    assert by["halving"]["cpu_s"] < by["multi"]["cpu_s"]
    assert all(0 <= r["score"] <= 100 for r in rows)
    # resumable: a second run trains nothing and reports the same table
    assert tuning_stage.main(["--quick", "--cache", str(cache), "--workdir", str(tmp_path / "work")]) == 0
    again = capsys.readouterr().out.strip().splitlines()
    assert again[-1] == out[-1] and len(cache.read_text().splitlines()) == len(rows)
    assert not any(line.startswith("digits seed") for line in again)

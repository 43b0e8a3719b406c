"""A team's raw table (strings, gaps, a string label) from upload to a promoted, tuned, exported
model through the CLI alone, on real ``archscreen api`` + ``archscreen worker`` processes (the
embedded default); ``archscreen predict`` on the raw test rows gives the job's test accuracy."""

from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from archscreen.client import FINAL, Client
from tests.archscreen.test_export import cli, one_error_line
from tests.services import RunningService

SPECS = {
    "linear": {"layers": [], "head": "classifier"},
    "mlp": {"layers": [{"linear": 16}, "relu"], "head": "classifier"},
}


def team_table(path: Path, n: int = 240) -> Path:
    """Two classes told apart by a wide-range number (with gaps) and a clinic name (with gaps)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(7)
    sick = rng.random(n) < 0.4
    amount = rng.lognormal(6, 0.5, n) * np.where(sick, 3.0, 1.0)
    amount[rng.random(n) < 0.1] = np.nan
    clinic = np.where(rng.random(n) < 0.7, np.where(sick, "north", "south"), rng.choice(["east", "west"], n))
    clinic_list: list[str | None] = clinic.tolist()
    for i in range(0, n, 17):
        clinic_list[i] = None
    label: list[str | None] = np.where(sick, "sick", "well").tolist()
    label[5] = None
    split = rng.choice(["train", "val", "test"], n, p=[0.6, 0.2, 0.2]).tolist()
    pq.write_table(pa.table({"amount": amount, "clinic": clinic_list, "label": label, "split": split}), path)
    return path


@pytest.mark.slow
def test_a_raw_table_becomes_a_model_that_takes_raw_rows(tmp_path: Path) -> None:
    t0 = time.monotonic()
    table = team_table(tmp_path / "team.parquet")
    for name, spec in SPECS.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(spec))
    specs = [str(tmp_path / f"{n}.json") for n in SPECS]
    svc = RunningService(tmp_path, f"sqlite:///{tmp_path / 'data' / 'archscreen.db'}", None)
    svc.cli("migrate")
    svc.token = svc.cli("token", "create", "--tenant", "cli").stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
    svc.start_api()
    try:
        svc.wait_healthy()
        dataset = ["--dataset", str(table), "--label-column", "label", "--max-epochs", "2"]
        p = cli(svc, "submit", *specs, "--study", "team", *dataset, "--promote", "top-1")
        assert p.returncode == 0, p.stderr
        # a study nobody promoted (screened by nobody yet): export and submit name the command to run
        p = cli(svc, "submit", specs[0], "--study", "plain", *dataset)
        assert p.returncode == 0, p.stderr
        assert "none promoted: run `archscreen promote plain`" in one_error_line(cli(svc, "export", "plain"))
        msg = one_error_line(cli(svc, "submit", specs[1], "--study", "plain", "--promote", "top-1"))
        assert "`archscreen promote plain --top 1`" in msg
        svc.start_worker(concurrency=2)
        with Client(svc.url, svc.token) as c:
            study = c.study_by_name("team")
            assert study is not None and study.policy.auto and study.policy.top_k == 1
            ds = c.dataset(int(study.dataset.removeprefix("ds_")))
            deadline = time.monotonic() + 240
            while not ((jobs := c.tuning_jobs(study.id)) and all(j.state in FINAL for j in jobs)):
                assert time.monotonic() < deadline, svc.logs()
                time.sleep(0.5)
        assert {j.state for j in jobs} == {"succeeded"}, svc.logs()
        assert ds.dropped_rows_missing_label == 1 and ds.preprocessing is not None
        assert [c.kind for c in ds.preprocessing.columns] == ["numeric", "categorical"]

        # promoting again keeps the jobs the auto-promotion made
        p = cli(svc, "promote", "team", "--top", "1")
        assert p.returncode == 0 and "tuning job" in p.stdout, p.stderr
        out = tmp_path / "best.pt"
        assert cli(svc, "export", "team", "-o", str(out)).returncode == 0
        f = torch.load(out, weights_only=True)
        assert f["preprocessing"]["classes"] == ["sick", "well"]
        preds = tmp_path / "preds.csv"
        p = cli(svc, "predict", str(out), str(table), "--split", "test", "-o", str(preds))
        assert p.returncode == 0, p.stderr
        reported = re.search(r"accuracy ([0-9.]+) on (\d+) labelled rows", p.stderr)
        assert reported is not None, p.stderr
        assert float(reported.group(1)) == pytest.approx(f["metrics"]["test_accuracy"], abs=1e-4)
        assert int(reported.group(2)) == ds.split_sizes["test"]
        rows = list(csv.DictReader(preds.open()))
        assert {r["prediction"] for r in rows} <= {"sick", "well"} and len(rows) >= int(reported.group(2))

        print(f"\ntable to model {time.monotonic() - t0:.1f} s")
    finally:
        svc.stop()


def test_promote_and_predict_refuse_bad_arguments_in_one_line(tmp_path: Path) -> None:
    svc = RunningService(tmp_path, "sqlite:///unused.db", None)
    svc.token = "unused"
    msg = one_error_line(cli(svc, "submit", "x.yaml", "--study", "s", "--promote", "best-2"))
    assert "expected top-K" in msg
    (tmp_path / "m.pt").write_bytes(b"not a model")
    (tmp_path / "d.csv").write_text("a,b\n1,2\n")
    msg = one_error_line(cli(svc, "predict", str(tmp_path / "m.pt"), str(tmp_path / "d.csv"), "-o", "p.csv"))
    assert "not a model file from `archscreen export`" in msg

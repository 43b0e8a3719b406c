"""`archscreen dataset upload|list|rm` and `submit --dataset FILE` against a real `archscreen api`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.services import RunningService

pytestmark = pytest.mark.slow


def cli(svc: RunningService, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**svc.env, "ARCHSCREEN_SERVER": svc.url, "ARCHSCREEN_TOKEN": svc.token}
    return subprocess.run(
        [sys.executable, "-m", "archscreen", *args], env=env, capture_output=True, text=True, timeout=180
    )


def test_dataset_commands_and_submit_with_a_local_file(tmp_path: Path, examples_dir: Path) -> None:
    svc = RunningService(tmp_path, f"sqlite:///{tmp_path / 'data' / 'archscreen.db'}", None)
    svc.cli("migrate")
    svc.token = svc.cli("token", "create", "--tenant", "cli").stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
    svc.start_api()
    try:
        svc.wait_healthy()
        rng = np.random.default_rng(0)
        data = tmp_path / "data (1).npz"  # a browser's second download: not a valid name as it is
        np.savez(
            data, x_train=rng.normal(size=(80, 1, 40)).astype(np.float32), y_train=rng.integers(0, 10, 80)
        )
        up = cli(svc, "dataset", "upload", str(data))
        assert up.returncode == 0, up.stderr
        ref = up.stdout.strip()
        assert ref.startswith("ds_") and "uploaded as" in up.stderr
        again = cli(svc, "dataset", "upload", str(data), "--json")
        assert again.returncode == 0 and json.loads(again.stdout)["ref"] == ref
        assert json.loads(again.stdout)["name"] == "data _1_.npz", "a valid name derived from the file's"

        listed = cli(svc, "dataset", "list")
        assert listed.returncode == 0 and ref in listed.stdout and "classification" in listed.stdout

        spec = examples_dir / "mlp.yaml"
        sub = cli(svc, "submit", str(spec), "--study", "own", "--dataset", str(data))
        assert sub.returncode == 0, sub.stderr
        assert f"already uploaded as {ref}" in sub.stderr, "the same bytes are found by sha256, not re-sent"
        status = cli(svc, "status", "own", "--json")
        study = json.loads(status.stdout)["study"]
        assert study["dataset"] == ref
        # max_epochs "auto" resolved for the upload (no measured cap): >= 10 passes and 2,000 steps
        train = json.loads(again.stdout)["split_sizes"]["train"]
        cap = max(10, -(-2000 // -(-train // 32)))
        assert study["screening"]["max_epochs"] == cap
        shown = cli(svc, "status", "own")
        assert shown.returncode == 0 and f"max_epochs {cap}, patience 10" in shown.stdout, shown.stdout

        used = cli(svc, "dataset", "rm", ref)
        assert (
            used.returncode != 0 and len(used.stderr.strip().splitlines()) == 1 and "used by" in used.stderr
        )
        table = tmp_path / "t.csv"
        table.write_text("amount,code,y\n" + "".join(f"{i * 37.5},{i % 4},{i % 2}\n" for i in range(60)))
        opts = ("--no-standardize", "--categorical-column", "code", "--max-categories", "3", "--json")
        tab = cli(svc, "dataset", "upload", str(table), "--label-column", "y", *opts)
        assert tab.returncode == 0, tab.stderr
        prep = json.loads(tab.stdout)["preprocessing"]
        assert (prep["standardize"], prep["max_categories"]) == (False, 3)
        assert {c["name"]: c["kind"] for c in prep["columns"]} == {"amount": "numeric", "code": "categorical"}
        bad = tmp_path / "bad.npz"
        bad.write_bytes(b"not a zip")
        refused = cli(svc, "dataset", "upload", str(bad))
        assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1
        assert "not an .npz archive" in refused.stderr and "Traceback" not in refused.stderr
        missing = cli(svc, "dataset", "rm", "ds_999")
        assert missing.returncode != 0 and "not found" in missing.stderr
        nofile = cli(svc, "submit", str(spec), "--study", "other", "--dataset", str(tmp_path / "nope.npz"))
        assert nofile.returncode != 0 and "no such dataset file" in nofile.stderr
        assert os.path.exists(data)
    finally:
        svc.stop()

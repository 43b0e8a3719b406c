"""The local CLI: exit codes, one-line errors, JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from archscreen.cli import main
from tests.conftest import EXAMPLES

BIN = Path(sys.executable).parent / "archscreen"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, env=env, timeout=300)


def test_screen_json_has_the_documented_fields() -> None:
    proc = run_cli(
        "screen", str(EXAMPLES / "mlp.yaml"), "--dataset", "mnist1d", "--max-epochs", "2", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for key in (
        "spec_hash",
        "val_loss",
        "val_accuracy",
        "test_accuracy",
        "epochs",
        "preferred_lr",
        "switch_posterior",
        "seconds",
    ):
        assert key in out
    assert out["epochs"] == 2
    assert len(out["switch_posterior"]) == 10
    assert {"lr", "weight"} <= set(out["switch_posterior"][0])
    assert proc.stderr == ""  # --json: no progress output


def test_screen_human_output_non_tty_prints_epoch_lines(capsys) -> None:
    code = main(
        [
            "screen",
            str(EXAMPLES / "logistic_regression.yaml"),
            "--dataset",
            "mnist1d",
            "--max-epochs",
            "2",
            "--copies",
            "3",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0
    assert "epoch 1/2" in captured.err and "epoch 2/2" in captured.err
    assert "preferred lr" in captured.out and "Switch posterior" in captured.out


def test_validate_ok_and_json(capsys) -> None:
    assert main(["validate", str(EXAMPLES / "lenet5.yaml"), "--dataset", "digits", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is True and out["num_params"] > 0 and out["layers"]


@pytest.mark.parametrize(
    ("layers", "expected"),
    [
        # value problems, all reported at parse time
        ("  - flatten\n  - linear: -3\n  - dropout: 1.5\n", ["layers[1].linear.out", "layers[2].dropout"]),
        # shape problems, found by inference against the dataset
        ("  - conv1d: {out: 4, kernel: 99}\n  - flatten\n", ["layers[0].conv1d.kernel"]),
    ],
)
def test_validate_bad_spec_exits_1_with_path_named_errors(
    tmp_path: Path, layers: str, expected: list[str]
) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(f"name: bad\nlayers:\n{layers}head: classifier\n")
    proc = run_cli("validate", str(spec), "--dataset", "mnist1d")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    for path in expected:
        assert path in proc.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["validate", "nope.yaml", "--dataset", "mnist1d"], 1, "no such spec file"),
        (["validate", str(EXAMPLES / "mlp.yaml"), "--dataset", "imagenet"], 1, "--dataset"),
        (
            ["screen", str(EXAMPLES / "mlp.yaml"), "--dataset", "mnist1d", "--max-epochs", "0"],
            2,
            "max-epochs",
        ),
        (
            [
                "screen",
                str(EXAMPLES / "mlp.yaml"),
                "--dataset",
                "mnist1d",
                "--lr-min",
                "1",
                "--lr-max",
                "0.1",
            ],
            2,
            "lr-min",
        ),
        (["grid", str(EXAMPLES / "mlp.yaml"), "--dataset", "mnist1d", "--lrs", "0.1,abc"], 2, "lrs"),
        (["screen", str(EXAMPLES / "mlp.yaml"), "--dataset", "mnist1d", "--device", "cuda:7"], 1, "CUDA"),
    ],
)
def test_bad_input_is_one_readable_line(args: list[str], code: int, message: str) -> None:
    proc = run_cli(*args)
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_grid_json_reports_each_rate_and_the_best() -> None:
    proc = run_cli(
        "grid",
        str(EXAMPLES / "logistic_regression.yaml"),
        "--dataset",
        "digits",
        "--lrs",
        "0.0001,0.1",
        "--max-epochs",
        "2",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [r["lr"] for r in out["runs"]] == [0.0001, 0.1]
    assert out["best_lr"] == 0.1


def test_datasets_lists_the_registry(capsys) -> None:
    assert main(["datasets", "--json"]) == 0
    names = {d["name"] for d in json.loads(capsys.readouterr().out)}
    assert {"mnist1d", "digits", "chartext", "regression"} <= names


def test_dataset_can_be_a_user_npz_file(tmp_path: Path, capsys) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    path = tmp_path / "mine.npz"
    np.savez(path, x_train=x, y_train=y)
    spec = tmp_path / "logreg.yaml"
    spec.write_text("name: logreg\nlayers: []\nhead: classifier\n")
    assert (
        main(["screen", str(spec), "--dataset", str(path), "--max-epochs", "3", "--copies", "3", "--json"])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["dataset"] == str(path)
    assert out["val_accuracy"] > 0.8  # the label is the sign of the first feature


def test_a_bad_npz_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    path.write_bytes(b"not a zip file")
    proc = run_cli("validate", str(EXAMPLES / "mlp.yaml"), "--dataset", str(path))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1

"""A zip of PNG class folders (scikit-learn's digits, 8x8, upscaled to 16x16 at upload) from
upload to a promoted, tuned, exported model through ``archscreen up`` (the embedded default:
SQLite, the folder broker, real worker processes) and the CLI alone: ``dataset upload
--image-size 16``, ``submit --promote top-1 --wait``, ``export``, ``predict DIR``. ``predict`` on
the raw 8x8 PNGs of the test split (resized as the upload resized them) gives the job's reported
test accuracy. (The test watches the tuning jobs through the client, as ``archscreen status``
would show them to a user.)"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from archscreen.client import FINAL, Client
from tests.services import free_port

pytestmark = pytest.mark.slow

SPECS = {
    "linear": {"layers": ["flatten"], "head": "classifier"},
    "conv": {"layers": [{"conv2d": {"out": 4, "kernel": 3}}, "relu", "flatten"], "head": "classifier"},
}
PER_SPLIT = {"train": 16, "val": 6, "test": 6}  # images per class


def digits_pngs(root: Path) -> Path:
    """``SPLIT/CLASS/i.png`` for the ten digits, 8x8 greyscale PNGs."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in range(10):
        images = iter(digits.images[digits.target == label])
        for split, n in PER_SPLIT.items():
            (root / split / str(label)).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = (next(images) * 255 / 16).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / str(label) / f"{i}.png")
    return root


def zipped(root: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(root.rglob("*.png")):
            zf.write(path, path.relative_to(root).as_posix())
    return dest


def start_up(data_dir: Path, port: int, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """``archscreen up`` with one worker process; its token once it prints it."""
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "archscreen",
            "up",
            "--port",
            str(port),
            "--workers",
            "1",
            "--data-dir",
            str(data_dir),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert up.stdout is not None
    while not any(line.startswith("API token") for line in lines):
        line = up.stdout.readline()
        if not line:
            up.wait(10)
            raise AssertionError("up exited before printing its token:\n" + "".join(lines))
        lines.append(line)
    return up, lines[-1].rsplit(" ", 1)[-1].strip()


def test_a_zip_of_png_class_folders_becomes_a_model_that_takes_the_pngs(tmp_path: Path) -> None:
    t0 = time.monotonic()
    pngs = digits_pngs(tmp_path / "digits")
    archive = zipped(pngs, tmp_path / "digits.zip")
    for name, spec in SPECS.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(spec))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHSCREEN_")}
    up, token = start_up(tmp_path / "data", port, env)
    env |= {"ARCHSCREEN_SERVER": f"http://127.0.0.1:{port}", "ARCHSCREEN_TOKEN": token}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        p = subprocess.run(
            [sys.executable, "-m", "archscreen", *args], env=env, capture_output=True, text=True, timeout=180
        )
        assert p.returncode == 0, (args, p.stderr)
        return p

    try:
        ref = cli("dataset", "upload", str(archive), "--image-size", "16").stdout.strip().splitlines()[-1]
        assert re.fullmatch(r"ds_\d+", ref), ref
        budget = ["--max-epochs", "3", "--batch-size", "32"]
        specs = [str(tmp_path / f"{n}.json") for n in SPECS]
        cli("submit", *specs, "--study", "digits", "--dataset", ref, *budget, "--promote", "top-1", "--wait")
        with Client(env["ARCHSCREEN_SERVER"], token) as c:
            study = c.study_by_name("digits")
            assert study is not None
            ds = c.dataset(int(ref.removeprefix("ds_")))
            deadline = time.monotonic() + 240
            while not ((jobs := c.tuning_jobs(study.id)) and all(j.state in FINAL for j in jobs)):
                assert time.monotonic() < deadline, "tuning did not finish"
                time.sleep(0.5)
        assert {j.state for j in jobs} == {"succeeded"}
        assert ds.input_shape == [1, 16, 16] and ds.classes == [str(k) for k in range(10)]
        assert ds.split_sizes == {s: 10 * n for s, n in PER_SPLIT.items()}

        model = tmp_path / "best.pt"
        cli("export", "digits", "-o", str(model))
        f = torch.load(model, weights_only=True)
        assert f["preprocessing"]["kind"] == "image" and f["preprocessing"]["classes"] == ds.classes
        preds = tmp_path / "preds.csv"
        p = cli("predict", str(model), str(pngs / "test"), "-o", str(preds))  # the raw PNGs of the test split
        reported = re.search(r"accuracy ([0-9.]+) on (\d+) labelled rows", p.stderr)
        assert reported is not None, p.stderr
        assert float(reported.group(1)) == pytest.approx(f["metrics"]["test_accuracy"], abs=1e-4)
        assert int(reported.group(2)) == ds.split_sizes["test"]
        rows = list(csv.DictReader(preds.open()))
        assert len(rows) == ds.split_sizes["test"] and {r["prediction"] for r in rows} <= set(ds.classes)
        right = sum(r["label"] == r["prediction"] for r in rows)
        assert right / len(rows) == pytest.approx(f["metrics"]["test_accuracy"], abs=1e-4)
        print(
            f"\nimages to model {time.monotonic() - t0:.1f} s; test accuracy "
            f"{f['metrics']['test_accuracy']:.4f} ({len(rows)} PNGs)"
        )
    finally:
        up.send_signal(signal.SIGINT)
        assert up.wait(60) == 0

"""``archscreen predict`` on image files: a folder or a zip, class folders or flat, decoded as the
upload decodes them; a model trained (here, briefly, in the test) on an image upload's canonical
file, exported with the worker's own payload function."""

from __future__ import annotations

import csv
import re
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from archscreen.cli import main
from archscreen.core.data.images import write_image_npz
from archscreen.core.data.npz import NpzDataset
from archscreen.core.data.preprocess import read_state
from archscreen.core.training.model import build_plain_model
from archscreen.worker.artifacts import model_payload
from tests.core.data.test_images import digits_members, png, write_zip

CONV = {"layers": [{"conv2d": {"out": 4, "kernel": 3}}, "relu", "flatten"], "head": "classifier"}


class Predict:
    """``archscreen predict ARGS`` in this process (the CLI's own ``main``; the subprocess form is
    in the slow end-to-end test): exit status, stdout and stderr."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        self.capsys.readouterr()
        code = main(["predict", *args])
        out, err = self.capsys.readouterr()
        return subprocess.CompletedProcess(["archscreen", "predict", *args], code, out, err)


@pytest.fixture
def predict_cli(capsys: pytest.CaptureFixture[str]) -> Predict:
    return Predict(capsys)


def one_line(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode != 0 and p.stdout == "", (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    return lines[0]


def unpack(members: dict[str, bytes], root: Path) -> Path:
    for name, data in members.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path, dict[str, bytes], Any]:
    """An image upload's canonical file (12x12 after an upscale of the 8x8 digits: the upload
    resizes), a model trained a few steps on it, exported as the worker exports it."""
    tmp = tmp_path_factory.mktemp("img")
    members = digits_members(per_class=8, classes=3, split_level=True)
    canonical = tmp / "canonical.npz"
    write_image_npz(write_zip(tmp / "d.zip", members), "image_zip", canonical, 1 << 26, size="12")
    dataset = NpzDataset(canonical)
    splits, info = dataset.load(0), dataset.info()
    torch.manual_seed(0)
    model = build_plain_model(CONV, info)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(30):
        opt.zero_grad()
        model(splits.x_train, splits.y_train).loss.backward()
        opt.step()
    model.eval()
    result = {"recommended_lr": 0.01, "tuner": "fd2", "seed": 0}
    payload = model_payload(model.state_dict(), result, CONV, "ds_1", info, 1, read_state(str(canonical)))
    path = tmp / "best.pt"
    torch.save(payload, path)
    return path, canonical, members, model


def test_class_folders_and_their_zip_give_the_models_predictions_on_the_uploaded_pixels(
    exported: tuple[Path, Path, dict[str, bytes], Any], tmp_path: Path, predict_cli: Predict
) -> None:
    model_path, canonical, members, model = exported
    with np.load(canonical) as arrays:
        x_val, y_val = arrays["x_val"], arrays["y_val"]
    dataset = NpzDataset(canonical)
    expected = model.predict(dataset.load(0).x_val).argmax(1).numpy()  # the normalised split, as trained
    folder = unpack(members, tmp_path / "digits")
    (folder / "val" / ".DS_Store").write_bytes(b"junk")  # skipped, as at upload
    zipped = write_zip(tmp_path / "digits.zip", members)
    for data in (folder, zipped):
        out = tmp_path / f"{data.name}.csv"
        p = predict_cli(str(model_path), str(data), "--split", "val", "-o", str(out))
        assert p.returncode == 0, p.stderr
        rows = list(csv.DictReader(out.open()))
        assert list(rows[0]) == ["file", "label", "prediction", "probability"]
        assert [r["file"] for r in rows] == sorted(n for n in members if n.startswith("val/"))
        assert [int(r["label"]) for r in rows] == y_val.tolist()  # folder names "0", "1", "2"
        assert [int(r["prediction"]) for r in rows] == expected.tolist()
        reported = re.search(r"accuracy ([0-9.]+) on (\d+) labelled rows", p.stderr)
        assert reported is not None and int(reported.group(2)) == len(x_val)
        assert float(reported.group(1)) == pytest.approx(float(np.mean(expected == y_val)), abs=1e-4)
    # the same raw pixels as an .npz (x_val beside y_val): the same predictions and accuracy
    np.savez(tmp_path / "raw.npz", x_val=x_val, y_val=y_val)
    out = tmp_path / "npz.csv"
    p = predict_cli(str(model_path), str(tmp_path / "raw.npz"), "--x-key", "x_val", "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert [int(r["prediction"]) for r in csv.DictReader(out.open())] == expected.tolist()
    assert f"accuracy {np.mean(expected == y_val):.4f} on {len(y_val)} labelled rows" in p.stderr


def test_a_flat_folder_gives_predictions_only(
    exported: tuple[Path, Path, dict[str, bytes], Any], tmp_path: Path, predict_cli: Predict
) -> None:
    model_path, _, members, _ = exported
    flat = tmp_path / "flat"
    flat.mkdir()
    for k, name in enumerate(n for n in members if n.startswith("val/")):
        (flat / f"img{k:02d}.png").write_bytes(members[name])
    # a colour image of another size: converted to the model's grey and resized, as an upload does
    (flat / "zcolour.png").write_bytes(png(np.full((20, 30, 3), (200, 10, 10), np.uint8)))
    out = tmp_path / "flat.csv"
    p = predict_cli(str(model_path), str(flat), "-o", str(out), "--batch-size", "5")
    assert p.returncode == 0 and "accuracy" not in p.stderr, p.stderr
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["file", "prediction", "probability"] and len(rows) == 7
    assert rows[-1]["file"] == "zcolour.png" and rows[0]["prediction"] in {"0", "1", "2"}
    assert all(0 < float(r["probability"]) <= 1 for r in rows)


def test_bad_image_inputs_are_one_line(
    exported: tuple[Path, Path, dict[str, bytes], Any], tmp_path: Path, predict_cli: Predict
) -> None:
    model_path, canonical, members, _ = exported
    out = str(tmp_path / "p.csv")
    assert "no such file or folder" in one_line(
        predict_cli(str(model_path), str(tmp_path / "nope"), "-o", out)
    )
    folder = unpack(members, tmp_path / "d")
    (folder / "val" / "1" / "notes.txt").write_text("not an image")
    msg = one_line(predict_cli(str(model_path), str(folder), "-o", out))
    assert "val/1/notes.txt: not a readable image" in msg
    assert not Path(out).exists()  # no half-written predictions
    msg = one_line(predict_cli(str(model_path), str(folder), "--split", "test", "-o", out))
    assert "no images in a test/ folder" in msg
    mixed = unpack({"0/a.png": members["val/0/6.png"], "b.png": members["val/0/6.png"]}, tmp_path / "m")
    assert "one layout" in one_line(predict_cli(str(model_path), str(mixed), "-o", out))
    with zipfile.ZipFile(tmp_path / "evil.zip", "w") as zf:
        zf.writestr("../0/a.png", members["val/0/6.png"])
    msg = one_line(predict_cli(str(model_path), str(tmp_path / "evil.zip"), "-o", out))
    assert "outside the archive" in msg
    # wrong channels: an .npz of RGB pixels for a grey model
    with np.load(canonical) as arrays:
        rgb = np.repeat(arrays["x_val"], 3, axis=1)
    np.savez(tmp_path / "rgb.npz", x_test=rgb)
    msg = one_line(predict_cli(str(model_path), str(tmp_path / "rgb.npz"), "-o", out))
    assert "samples of shape (3, 12, 12); the model takes (1, 12, 12)" in msg
    # a table to an image model, images to a model of no image upload
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    assert "not trained on a table" in one_line(
        predict_cli(str(model_path), str(tmp_path / "t.csv"), "-o", out)
    )
    f = torch.load(model_path, weights_only=True)
    f["preprocessing"] = None
    f["state_dict"] = {k: v for k, v in f["state_dict"].items() if not k.startswith("input.")}
    torch.save(f, tmp_path / "plain.pt")
    msg = one_line(predict_cli(str(tmp_path / "plain.pt"), str(folder), "-o", out))
    assert "not trained on an image upload" in msg

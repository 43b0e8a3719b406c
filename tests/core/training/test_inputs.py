"""An image upload's normalisation as the exported model's input module (issue 28, item 3)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from archscreen.core.data.images import normalise_images, write_image_npz
from archscreen.core.data.npz import NpzDataset
from archscreen.core.data.preprocess import read_state
from archscreen.core.training.inputs import ImageInput
from archscreen.core.training.model import build_plain_model
from tests.core.data.test_images import digits_members, write_zip

CONV = {"layers": [{"conv2d": {"out": 4, "kernel": 3}}, "relu", "flatten"], "head": "classifier"}


def test_image_input_equals_the_numpy_normalisation() -> None:
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(5, 3, 6, 4), dtype=np.uint8)
    state = {"kind": "image", "version": 1, "scale": 1 / 255, "mean": [0.1, 0.5, 0.9], "std": [0.2, 1.0, 0.3]}
    expected = normalise_images(raw, state)
    got = ImageInput(state)(torch.from_numpy(raw)).numpy()
    assert got.dtype == np.float32 and np.array_equal(got, expected)  # the same float32 operations


def test_an_image_uploads_exported_model_takes_raw_images(tmp_path: Path) -> None:
    out = tmp_path / "canonical.npz"
    write_image_npz(
        write_zip(tmp_path / "d.zip", digits_members(split_level=True)), "image_zip", out, 1 << 26
    )
    state = read_state(str(out))
    assert state is not None and state["kind"] == "image"
    dataset = NpzDataset(out)
    splits, info = dataset.load(0), dataset.info()
    # training sees normalised pixels: mean 0, std 1 over the converted train images (of which the
    # test split is carved here, so nearly)
    assert abs(float(splits.x_train.mean())) < 0.05 and abs(float(splits.x_train.std()) - 1) < 0.05
    torch.manual_seed(0)
    trained = build_plain_model(CONV, info)  # as a tuning job trains it: on the normalised split
    buffers = {f"input.{k}": v for k, v in ImageInput(state).state_dict().items()}
    buf = io.BytesIO()
    torch.save({"state_dict": buffers | trained.state_dict(), "spec": CONV, "preprocessing": state}, buf)
    buf.seek(0)
    f = torch.load(buf, weights_only=True)
    exported = build_plain_model(f["spec"], info, f["preprocessing"])
    exported.load_state_dict(f["state_dict"], strict=True)
    with np.load(out) as arrays:
        raw = torch.from_numpy(arrays["x_val"])  # uint8, as uploaded (the val split is given)
    assert raw.dtype == torch.uint8 and float(raw.max()) > 1
    trained.eval(), exported.eval()
    assert torch.equal(exported.predict(raw.float()), trained.predict(splits.x_val))

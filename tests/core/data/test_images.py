"""Image zips and image Parquet files to the canonical uint8 ``.npz`` (Pillow, numpy, real files)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from archscreen.core.data.base import DatasetError
from archscreen.core.data.images import (
    ImageLimits,
    complete_image_state,
    default_size,
    images_to_arrays,
    is_image_parquet,
    parse_size,
    write_image_npz,
)
from archscreen.core.data.npz import NpzDataset
from archscreen.core.data.preprocess import STATE_KEY, read_state

LIMITS = ImageLimits(max_bytes=16 * 2**20)


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def digits_members(per_class: int = 6, classes: int = 3, split_level: bool = False) -> dict[str, bytes]:
    """scikit-learn's digits as 8x8 greyscale PNGs: ``[split/]digit/i.png``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    members: dict[str, bytes] = {}
    for label in range(classes):
        images = digits.images[digits.target == label][:per_class]
        for i, image in enumerate(images):
            split = ("train/" if i < per_class - 2 else "val/") if split_level else ""
            members[f"{split}{label}/{i}.png"] = png((image * 255 / 16).astype(np.uint8))
    return members


def write_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_class_folders_become_uint8_nchw_with_train_stats(tmp_path: Path) -> None:
    src = write_zip(tmp_path / "digits.zip", digits_members())
    arrays, classes, facts = images_to_arrays(src, "image_zip", LIMITS)
    assert classes == ["0", "1", "2"]
    assert arrays["x_train"].shape == (18, 1, 8, 8) and arrays["x_train"].dtype == np.uint8
    assert sorted(arrays) == ["x_train", "y_train"]
    assert np.bincount(arrays["y_train"]).tolist() == [6, 6, 6]
    assert (facts.mode, facts.height, facts.width) == ("L", 8, 8)
    scaled = arrays["x_train"].astype(np.float64) / 255
    assert facts.mean == pytest.approx([scaled.mean()], abs=1e-5)
    assert facts.std == pytest.approx([scaled.std()], abs=1e-5)


def test_split_folders_colour_and_a_chosen_size(tmp_path: Path) -> None:
    members = digits_members(split_level=True)
    members["train/2/colour.png"] = png(np.full((10, 12, 3), (255, 0, 0), np.uint8))
    src = write_zip(tmp_path / "d.zip", members)
    arrays, _, facts = images_to_arrays(src, "image_zip", LIMITS, size=(4, 6))
    assert facts.mode == "RGB"  # one colour image makes every image RGB
    assert arrays["x_train"].shape == (13, 3, 4, 6) and arrays["x_val"].shape == (6, 3, 4, 6)
    red = arrays["x_train"][list(arrays["y_train"]).index(2) + 4]  # sorted: 2/0..3.png, then colour.png
    assert red[0].min() == 255 and red[1].max() == 0
    # the stats come from the train split only
    assert facts.mean[0] == pytest.approx(arrays["x_train"][:, 0].mean() / 255, abs=1e-5)


def test_default_size_is_the_median_capped_at_64() -> None:
    assert default_size([8, 8, 30], [8, 10, 30]) == (8, 10)
    assert default_size([256, 256], [128, 128]) == (64, 32)
    assert parse_size("32") == (32, 32) and parse_size("24x32") == (24, 32)
    with pytest.raises(DatasetError, match="expected N or HxW"):
        parse_size("big")


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("1/broken.png", b"\x89PNG\r\n\x1a\n" + b"not really", r"1/broken\.png: not a readable image"),
        ("1/notes.txt", b"hello", r"1/notes\.txt: not a readable image"),
        ("../evil.png", b"x", r"\.\./evil\.png: a member name outside the archive"),
        ("/abs/evil.png", b"x", r"/abs/evil\.png: a member name outside the archive"),
        ("a/b/c/d.png", b"x", r"a/b/c/d\.png: expected CLASS/FILE"),
    ],
)
def test_bad_members_are_named(tmp_path: Path, name: str, data: bytes, message: str) -> None:
    members = digits_members(per_class=2) | {name: data}
    with pytest.raises(DatasetError, match=message):
        images_to_arrays(write_zip(tmp_path / "bad.zip", members), "image_zip", LIMITS)


def test_truncated_png_is_named(tmp_path: Path) -> None:
    whole = png(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8))
    members = digits_members(per_class=2) | {"0/cut.png": whole[: len(whole) // 2]}
    with pytest.raises(DatasetError, match=r"0/cut\.png: not a readable image"):
        images_to_arrays(write_zip(tmp_path / "cut.zip", members), "image_zip", LIMITS)


def test_zip_bomb_is_refused_from_the_declared_size(tmp_path: Path) -> None:
    src = tmp_path / "bomb.zip"
    with zipfile.ZipFile(src, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("0/a.png", png(np.zeros((8, 8), np.uint8)))
        with zf.open("0/zeros.png", "w", force_zip64=True) as member:
            block = bytes(2**20)
            for _ in range(80):  # 80 MiB of zeros: ~80 kB on disk
                member.write(block)
    assert src.stat().st_size < 200_000
    with pytest.raises(DatasetError, match=r"0/zeros\.png: unpacks to 83,886,080 bytes.*zip bomb"):
        images_to_arrays(src, "image_zip", LIMITS)
    with pytest.raises(DatasetError, match=r"over 1,000,000 bytes.*zip bomb"):
        images_to_arrays(src, "image_zip", ImageLimits(max_bytes=1_000_000, max_member_bytes=100 * 2**20))


def test_decompression_bomb_png_is_refused_before_decoding(tmp_path: Path) -> None:
    bomb = png(np.zeros((3000, 3000), np.uint8))  # 9 Mpixel, ~9 kB
    members = digits_members(per_class=2) | {"1/bomb.png": bomb}
    limits = ImageLimits(max_bytes=16 * 2**20, max_pixels=2000 * 2000)
    with pytest.raises(DatasetError, match=r"1/bomb\.png: the image has more than 4,000,000 pixels"):
        images_to_arrays(write_zip(tmp_path / "b.zip", members), "image_zip", limits)


def test_output_over_the_limit_is_refused_before_allocating(tmp_path: Path) -> None:
    src = write_zip(tmp_path / "d.zip", digits_members())
    with pytest.raises(DatasetError, match="choose a smaller image_size"):
        images_to_arrays(src, "image_zip", ImageLimits(max_bytes=2**20), size=(512, 512))


def test_parquet_of_image_bytes_with_split_column(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    members = digits_members(per_class=4)
    names = list(members)
    table = pa.table(
        {
            "image": pa.array(
                [{"bytes": members[n], "path": n} for n in names],
                pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
            ),
            "label": [f"d{n.split('/')[0]}" for n in names],
            "split": ["test" if n.endswith("3.png") else "train" for n in names],
        }
    )
    src = tmp_path / "images.parquet"
    pq.write_table(table, src, row_group_size=5)
    assert is_image_parquet(src)
    out = tmp_path / "canonical.npz"
    classes, facts = write_image_npz(src, "image_parquet", out, 2**24, label_column="label", size="6")
    assert classes == ["d0", "d1", "d2"] and facts["height"] == 6
    info = NpzDataset(out).info()  # the canonical .npz the service reads
    assert info.task == "classification" and info.input_shape == (1, 6, 6) and info.num_classes == 3
    with np.load(out) as npz:
        assert npz["x_train"].shape == (9, 1, 6, 6) and npz["x_test"].shape == (3, 1, 6, 6)


def test_parquet_bad_image_row_is_named(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = png(np.zeros((8, 8), np.uint8))
    src = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"img": [good, good, b"garbage"], "y": [0, 1, 1]}), src)
    with pytest.raises(DatasetError, match="row 2: not a readable image"):
        images_to_arrays(src, "image_parquet", LIMITS, label_column="y")


def strip_state(src: Path, dest: Path) -> Path:
    """The canonical file as uploads wrote it before the image state existed: pixels and labels only."""
    with np.load(src) as npz:
        np.savez(dest, **{k: npz[k] for k in npz.files if k != STATE_KEY})
    return dest


def test_an_image_dataset_uploaded_without_its_state_is_completed_as_a_new_upload(tmp_path: Path) -> None:
    members = digits_members(per_class=7, split_level=True)
    members["train/2/colour.png"] = png(np.full((10, 12, 3), (200, 30, 90), np.uint8))
    new = tmp_path / "new.npz"
    classes, facts = write_image_npz(write_zip(tmp_path / "d.zip", members), "image_zip", new, 1 << 26)
    fresh = read_state(str(new))
    assert fresh is not None and fresh["classes"] == classes == ["0", "1", "2"]
    old = strip_state(new, tmp_path / "old.npz")
    assert read_state(str(old)) is None
    x_old = NpzDataset(old).load(0).x_train
    assert float(x_old.max()) > 200  # trained on 0..255 before

    completed = tmp_path / "completed-without-suffix"
    complete_image_state(old, completed, classes)
    state = read_state(str(completed))
    assert state is not None and state["classes"] == classes and state["kind"] == "image"
    # the stats of x_train as the upload computes them (RGB: three channels, from the train split)
    assert len(state["mean"]) == 3 and state["mean"] == pytest.approx(facts["mean"], abs=2e-6)
    assert state["std"] == pytest.approx(facts["std"], abs=2e-6) and state["scale"] == fresh["scale"]
    x_new = NpzDataset(new).load(0).x_train
    x_completed = NpzDataset(completed).load(0).x_train
    assert torch.allclose(x_completed, x_new, atol=1e-4)  # trains normalised, as a new upload does
    assert abs(float(x_completed.mean())) < 0.1
    with np.load(old) as a, np.load(completed) as b:
        assert all(np.array_equal(a[k], b[k]) for k in a.files)  # the data itself is unchanged

    # a state without class names (uploads between the two changes) keeps its stats, gains the names
    partial = {k: v for k, v in fresh.items() if k != "classes"}
    with np.load(new) as npz:
        arrays = {k: npz[k] for k in npz.files if k != STATE_KEY}
    np.savez(
        tmp_path / "partial.npz",
        **arrays,
        **{STATE_KEY: np.frombuffer(json.dumps(partial).encode(), np.uint8)},  # type: ignore[arg-type]
    )
    complete_image_state(tmp_path / "partial.npz", tmp_path / "done.npz", classes)
    assert read_state(str(tmp_path / "done.npz")) == fresh


def test_completing_refuses_a_file_that_is_no_image_upload(tmp_path: Path) -> None:
    np.savez(tmp_path / "flat.npz", x_train=np.zeros((4, 3), np.float32), y_train=np.zeros(4, np.int64))
    with pytest.raises(DatasetError, match="not the uint8"):
        complete_image_state(tmp_path / "flat.npz", tmp_path / "out.npz", None)

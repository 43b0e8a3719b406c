"""Image datasets (a zip of class folders, or a Parquet of image bytes) turned into a ``.npz``.

Two layouts, both decoded with Pillow one image at a time:

* **image_zip**: the ImageFolder layout, ``CLASS/FILE`` members, or ``SPLIT/CLASS/FILE`` with
  ``SPLIT`` one of ``train``, ``val``, ``test`` (all members one way or the other). The class
  names are the folder names, ids in sorted order. ``__MACOSX/`` and dot-files are skipped.
* **image_parquet**: one binary column (raw bytes, or a struct with a ``bytes`` field as
  exported image datasets store it) plus the label column, and an optional ``split`` column.
  Read a few rows at a time (``iter_batches``), never the whole table.

Output: ``x_<split>`` uint8 of shape ``(N, C, H, W)`` and ``y_<split>`` int64, the canonical
layout of :mod:`archscreen.core.data.npz`, plus the facts of :class:`ImageFacts` (the mode, the
size, and the per-channel mean and std of the train split on the 0..1 scale, which a model's
input normalisation uses).

Choices, each a switch:

* size: ``size=(H, W)`` at upload; by default the median height and width of the images, scaled
  down together so that the longer side is at most ``max_default_side`` (64). Every image is
  resized to it (bilinear, stretched: no crop), so the aspect of odd images is not kept.
* mode: ``mode="L"`` or ``"RGB"``; by default ``RGB`` if any image is in a colour mode (a
  palette counts as colour), else ``L``. Alpha is dropped.

Hostile files: a member name that is absolute or climbs out (``..``) is refused; the zip's
declared uncompressed sizes are checked before anything is inflated (per member and in total,
and :mod:`zipfile` never inflates a member past its declared size); Pillow's decompression-bomb
limit (``Image.MAX_IMAGE_PIXELS = max_pixels``) is set and its warning is an error; the output
array's size is checked before it is allocated. Every problem is a :class:`DatasetError` with
one line naming the member (or the Parquet row).
"""

from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any, Literal

import numpy as np

from .base import DatasetError
from .preprocess import STATE_KEY

ImageFormat = Literal["image_zip", "image_parquet"]
ImageMode = Literal["L", "RGB"]
IMAGE_FORMATS: tuple[ImageFormat, ...] = ("image_zip", "image_parquet")
SPLITS = ("train", "val", "test")
SPLIT_COLUMN = "split"
DEFAULT_MAX_SIDE = 64
DEFAULT_MAX_PIXELS = 4096 * 4096
DEFAULT_MAX_MEMBER_BYTES = 64 * 2**20
MAX_MEMBERS = 1_000_000
PARQUET_BATCH_ROWS = 64
Contents = Callable[[], Iterator[bytes]]  # a fresh pass over the images' bytes, in item order
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"})


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on what an upload may make the validator read, decode and write."""

    max_bytes: int  # total declared uncompressed bytes of the zip, and the output array
    max_member_bytes: int = DEFAULT_MAX_MEMBER_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class ImageFacts:
    """What the conversion found: recorded with the dataset (``facts["image"]``)."""

    mode: ImageMode
    height: int
    width: int
    mean: list[float] = field(default_factory=list)  # per channel, train split, 0..1 scale
    std: list[float] = field(default_factory=list)
    median_source_size: list[int] = field(default_factory=list)  # [height, width]


@dataclass(frozen=True)
class _Item:
    """One image: where it is (a member name or ``row N``), its split and its label."""

    where: str
    split: str
    label: str | int


# ----------------------------------------------------------------------------------- decoding
def _open(data: bytes, where: str, limits: ImageLimits) -> object:
    """A Pillow image with its header read; the decompression-bomb limit applies."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = limits.max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise DatasetError(
            f"{where}: the image has more than {limits.max_pixels:,} pixels (a decompression bomb?)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise DatasetError(f"{where}: not a readable image ({_one_line(exc)})") from None


def decode_image(
    data: bytes, where: str, limits: ImageLimits, mode: ImageMode, size: tuple[int, int]
) -> np.ndarray:
    """``(C, H, W)`` uint8: decoded, converted to ``mode`` and resized to ``size`` (H, W). The one
    decoding path of an upload and of ``archscreen predict`` on image files
    (:mod:`~archscreen.core.data.image_inputs`), so both give the same pixels."""
    from PIL import Image

    image = _open(data, where, limits)
    assert isinstance(image, Image.Image)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.draft(mode, (size[1], size[0]))  # JPEG: decode at a reduced scale when it can
            image.load()
            converted = image.convert(mode).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombWarning) as exc:
        raise DatasetError(f"{where}: not a readable image ({_one_line(exc)})") from None
    pixels = np.asarray(converted, dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


# --------------------------------------------------------------------------------- zip layout
def _zip_items(zf: zipfile.ZipFile, limits: ImageLimits) -> list[tuple[zipfile.ZipInfo, _Item]]:
    """The image members with their split and class; refuses unsafe names and oversized members."""
    found: list[tuple[zipfile.ZipInfo, _Item]] = []
    total = 0
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise DatasetError(f"the zip has {len(infos):,} members; the limit is {MAX_MEMBERS:,}")
    for info in infos:
        name = info.filename
        path = PurePosixPath(name.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
            raise DatasetError(f"{name}: a member name outside the archive (absolute, or with '..')")
        if info.is_dir() or any(p.startswith(".") or p == "__MACOSX" for p in path.parts):
            continue
        if info.file_size > limits.max_member_bytes:
            raise DatasetError(
                f"{name}: unpacks to {info.file_size:,} bytes; a member may have "
                f"{limits.max_member_bytes:,} (a zip bomb?)"
            )
        total += info.file_size
        if total > limits.max_bytes:
            raise DatasetError(f"the zip unpacks to over {limits.max_bytes:,} bytes (a zip bomb?)")
        parts = path.parts
        if len(parts) == 3 and parts[0] in SPLITS:
            found.append((info, _Item(name, parts[0], parts[1])))
        elif len(parts) == 2:
            found.append((info, _Item(name, "", parts[0])))
        else:
            raise DatasetError(
                f"{name}: expected CLASS/FILE or SPLIT/CLASS/FILE (SPLIT one of train, val, test)"
            )
    if not found:
        raise DatasetError("the zip holds no images (expected CLASS/FILE members)")
    with_split = {bool(item.split) for _, item in found}
    if len(with_split) > 1:
        raise DatasetError("some members have a train/val/test folder and some do not; use one layout")
    found.sort(key=lambda pair: pair[1].where)
    return [(info, _Item(it.where, it.split or "train", it.label)) for info, it in found]


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limits: ImageLimits) -> bytes:
    try:
        with zf.open(info) as f:
            data = f.read(limits.max_member_bytes + 1)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise DatasetError(f"{info.filename}: cannot unpack ({_one_line(exc)})") from None
    if len(data) > limits.max_member_bytes:
        raise DatasetError(f"{info.filename}: unpacks past {limits.max_member_bytes:,} bytes (a zip bomb?)")
    return data


def _zip_images(path: str | os.PathLike[str], limits: ImageLimits) -> tuple[list[_Item], Contents]:
    """The items in order, and a maker of generators of their bytes (read member by member)."""
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"not a zip archive ({_one_line(exc)})") from None
    with zf:
        pairs = _zip_items(zf, limits)

    def contents() -> Iterator[bytes]:
        with zipfile.ZipFile(path) as again:
            for info, _ in pairs:
                yield _read_member(again, info, limits)

    return [item for _, item in pairs], contents


# ----------------------------------------------------------------------------- parquet layout
def image_column(schema: object) -> str | None:
    """The name of the first binary (or struct-with-``bytes``) column of a Parquet schema."""
    import pyarrow as pa

    assert isinstance(schema, pa.Schema)
    for fld in schema:
        kind = fld.type
        if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            return str(fld.name)
        if pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0:
            return str(fld.name)
    return None


def is_image_parquet(path: str | os.PathLike[str]) -> bool:
    """True for a readable Parquet file with an image-bytes column (read from its footer only)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return image_column(pq.read_schema(path)) is not None
    except (pa.ArrowException, OSError, ValueError):
        return False


def _parquet_batches(path: str | os.PathLike[str], columns: list[str]) -> Iterator[dict[str, list[object]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as pf:
            for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
                yield batch.to_pydict()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DatasetError(f"cannot read the parquet table: {_one_line(exc)}") from None


def _parquet_images(path: str | os.PathLike[str], label_column: str) -> tuple[list[_Item], Contents]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DatasetError(f"cannot read the parquet table: {_one_line(exc)}") from None
    column = image_column(schema)
    if column is None:
        raise DatasetError("no image column (binary, or a struct with a 'bytes' field) in the table")
    if label_column not in schema.names:
        raise DatasetError(
            f"no label column {label_column!r}; the table's columns: {', '.join(schema.names[:20])}"
        )
    kind = schema.field(label_column).type
    if not (pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DatasetError(f"label column {label_column!r} has type {kind}; expected integer or string")
    meta = [label_column] + ([SPLIT_COLUMN] if SPLIT_COLUMN in schema.names else [])
    items: list[_Item] = []
    for batch in _parquet_batches(path, meta):
        splits = batch.get(SPLIT_COLUMN, [None] * len(batch[label_column]))
        for label, split in zip(batch[label_column], splits, strict=True):
            where = f"row {len(items)}"
            if label is None:
                raise DatasetError(f"{where}: the label {label_column!r} is missing")
            if split is not None and split not in SPLITS:
                raise DatasetError(
                    f"{where}: column 'split' holds {str(split)[:40]!r}; expected train, val or test"
                )
            assert isinstance(label, str | int)
            items.append(_Item(where, split or "train", label))
            if len(items) > MAX_MEMBERS:
                raise DatasetError(f"the table has over {MAX_MEMBERS:,} rows")

    def contents() -> Iterator[bytes]:
        row = 0
        for batch in _parquet_batches(path, [column]):
            for value in batch[column]:
                data = value.get("bytes") if isinstance(value, dict) else value
                if not isinstance(data, bytes):
                    raise DatasetError(f"row {row}: no image bytes in column {column!r}")
                row += 1
                yield data

    return items, contents


# ------------------------------------------------------------------------------- conversion
def _survey(
    items: list[_Item], contents: Iterator[bytes], limits: ImageLimits
) -> tuple[list[int], list[int], bool]:
    """Heights, widths and whether any image is in colour: headers only, nothing decoded."""
    heights: list[int] = []
    widths: list[int] = []
    colour = False
    for item, data in zip(items, contents, strict=False):
        image = _open(data, item.where, limits)
        width, height = image.size  # type: ignore[attr-defined]
        if width < 1 or height < 1:
            raise DatasetError(f"{item.where}: the image is empty ({width}x{height})")
        heights.append(height)
        widths.append(width)
        colour = colour or image.mode not in GREY_MODES  # type: ignore[attr-defined]
    return heights, widths, colour


def default_size(heights: list[int], widths: list[int], max_side: int = DEFAULT_MAX_SIDE) -> tuple[int, int]:
    """The median height and width, scaled down together so the longer side is at most ``max_side``."""
    height, width = int(np.median(heights)), int(np.median(widths))
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _class_ids(items: list[_Item]) -> tuple[list[int], list[str] | None]:
    if all(isinstance(i.label, int) for i in items):
        return [int(i.label) for i in items], None
    classes = sorted({str(i.label) for i in items})
    index = {c: n for n, c in enumerate(classes)}
    return [index[str(i.label)] for i in items], classes


def convert(
    items: list[_Item],
    contents: Contents,
    limits: ImageLimits,
    *,
    size: tuple[int, int] | None,
    mode: ImageMode | None,
) -> tuple[dict[str, np.ndarray], list[str] | None, ImageFacts]:
    """Decode every image into the split arrays; the class names and the facts."""
    heights, widths, colour = _survey(items, contents(), limits)
    median = [int(np.median(heights)), int(np.median(widths))]
    height, width = size or default_size(heights, widths)
    chosen: ImageMode = mode or ("RGB" if colour else "L")
    channels = 3 if chosen == "RGB" else 1
    needed = len(items) * channels * height * width
    if needed > limits.max_bytes:
        raise DatasetError(
            f"{len(items):,} images of {channels}x{height}x{width} make {needed:,} bytes; "
            f"the limit is {limits.max_bytes:,} (choose a smaller image_size)"
        )
    ids, classes = _class_ids(items)
    counts = {s: sum(1 for i in items if i.split == s) for s in SPLITS}
    if not counts["train"]:
        raise DatasetError("no train images (a train/ folder, or split 'train' rows)")
    x = {s: np.empty((n, channels, height, width), np.uint8) for s, n in counts.items() if n}
    y = {s: np.empty(n, np.int64) for s, n in counts.items() if n}
    filled = dict.fromkeys(SPLITS, 0)
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    for item, label, data in zip(items, ids, contents(), strict=True):
        pixels = decode_image(data, item.where, limits, chosen, (height, width))
        n = filled[item.split]
        x[item.split][n], y[item.split][n] = pixels, label
        filled[item.split] = n + 1
        if item.split == "train":
            scaled = pixels.reshape(channels, -1).astype(np.float64) / 255.0
            total += scaled.sum(axis=1)
            total_sq += (scaled**2).sum(axis=1)
    count = counts["train"] * height * width
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    arrays = {f"x_{s}": a for s, a in x.items()} | {f"y_{s}": a for s, a in y.items()}
    facts = ImageFacts(
        chosen, height, width, [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std], median
    )
    return arrays, classes, facts


def images_to_arrays(
    path: str | os.PathLike[str],
    fmt: ImageFormat,
    limits: ImageLimits,
    *,
    label_column: str | None = None,
    size: tuple[int, int] | None = None,
    mode: ImageMode | None = None,
) -> tuple[dict[str, np.ndarray], list[str] | None, ImageFacts]:
    """Read an image zip or an image Parquet at ``path``: ``{x_*, y_*}``, class names, facts."""
    if size is not None and (min(size) < 1 or max(size) > 1024):
        raise DatasetError(f"image size {size[0]}x{size[1]}: each side must be 1..1024")
    if fmt == "image_zip":
        items, contents = _zip_images(path, limits)
    elif fmt == "image_parquet":
        if not label_column:
            raise DatasetError("an image Parquet needs label_column (the column holding the classes)")
        items, contents = _parquet_images(path, label_column)
    else:
        raise DatasetError(f"unknown image format {fmt!r}; expected {' or '.join(IMAGE_FORMATS)}")
    return convert(items, contents, limits, size=size, mode=mode)


def parse_size(text: str) -> tuple[int, int]:
    """``"32"`` → (32, 32); ``"24x32"`` → (24, 32) (height x width)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) not in (1, 2):
        raise DatasetError(f"image size {text[:40]!r}: expected N or HxW, e.g. 32 or 24x32")
    return (values[0], values[-1])


IMAGE_STATE_KIND = "image"  # the preprocessing state's kind (a table's state has none)


def image_state(facts: ImageFacts, classes: list[str] | None = None) -> dict[str, object]:
    """The input normalisation stored in the canonical ``.npz`` (under ``preprocessing_json``, as
    a table's preprocessing is): pixels times ``scale``, minus the train ``mean``, divided by the
    train ``std`` (1 for a constant channel), per channel. ``classes``: the class names in id order
    (the folder names of a zip; None for integer labels), so that ``archscreen predict`` on class
    folders can compare a folder's name with the prediction."""
    return {
        "kind": IMAGE_STATE_KIND,
        "version": 1,
        "scale": 1.0 / 255.0,
        "mean": list(facts.mean),
        "std": [s if s > 0 else 1.0 for s in facts.std],
        "classes": classes,
    }


def channel_stats(x: np.ndarray, chunk: int = 256) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of ``(N, C, H, W)`` uint8 pixels on the 0..1 scale, as
    :func:`convert` computes them at upload (float64 sums, rounded to 6 digits); read ``chunk``
    images at a time, so a memory-mapped or lazily read array is never converted whole."""
    channels = x.shape[1]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    for start in range(0, len(x), chunk):
        part = np.asarray(x[start : start + chunk]).astype(np.float64) / 255.0
        total += part.sum(axis=(0, 2, 3))
        total_sq += (part**2).sum(axis=(0, 2, 3))
    count = max(1, len(x) * x.shape[2] * x.shape[3])
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def complete_image_state(
    src: str | os.PathLike[str], out: str | os.PathLike[str], classes: list[str] | None
) -> None:
    """Write a copy of the canonical image ``.npz`` ``src`` to ``out`` with a complete image state.

    For image datasets uploaded before the state existed (their pixels trained on 0..255): the
    per-channel stats are computed here from ``x_train``, the split they are computed from at upload
    (before any val/test carving), so the dataset then trains normalised like a new upload, and its
    exported model starts with the same :class:`ImageInput`. A state without ``classes`` (uploaded
    before those were stored) keeps its stats and gains the ``classes`` given."""
    with np.load(src, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files if key != STATE_KEY}
        old = json.loads(npz[STATE_KEY].tobytes().decode()) if STATE_KEY in npz.files else None
    if old is None:
        x = arrays["x_train"]
        if x.ndim != 4 or x.dtype != np.uint8:
            raise DatasetError(
                f"x_train of shape {x.shape} ({x.dtype}): not the uint8 (N, C, H, W) of an image upload"
            )
        mean, std = channel_stats(x)
        mode: ImageMode = "RGB" if x.shape[1] == 3 else "L"
        state = image_state(ImageFacts(mode, x.shape[2], x.shape[3], mean, std), classes)
    else:
        state = {**old, "classes": classes}
    blob = np.frombuffer(json.dumps(state).encode(), np.uint8)
    with open(out, "wb") as f:  # a file object: np.savez adds no ".npz" suffix to it
        np.savez(f, **arrays, **{STATE_KEY: blob})  # type: ignore[arg-type]


def normalise_images(x: np.ndarray, state: dict[str, Any]) -> np.ndarray:
    """``(N, C, H, W)`` raw pixels (0..255) -> the float32 inputs the network is trained on; the
    same float32 operations, in the same order, as :class:`~archscreen.core.training.inputs.ImageInput`."""
    shape = (1, -1, 1, 1)
    mean = np.asarray(state["mean"], np.float32).reshape(shape)
    std = np.asarray(state["std"], np.float32).reshape(shape)
    scaled = x.astype(np.float32, copy=False) * np.float32(state["scale"])
    out: np.ndarray = (scaled - mean) / std
    return out


def write_image_npz(
    src: str | os.PathLike[str],
    fmt: ImageFormat,
    out: str | os.PathLike[str],
    max_bytes: int,
    *,
    label_column: str | None = None,
    size: str | None = None,
    mode: ImageMode | None = None,
) -> tuple[list[str] | None, dict[str, object]]:
    """Convert ``src`` and write the canonical ``.npz`` to ``out``: the class names and the facts
    (``size`` as the upload gives it, ``N`` or ``HxW``)."""
    arrays, classes, facts = images_to_arrays(
        src,
        fmt,
        ImageLimits(max_bytes),
        label_column=label_column,
        size=parse_size(size) if size else None,
        mode=mode,
    )
    state = np.frombuffer(json.dumps(image_state(facts, classes)).encode(), np.uint8)
    np.savez(out, **arrays, **{STATE_KEY: state})  # type: ignore[arg-type]
    return classes, asdict(facts)

"""Images to predict on: a folder or a zip, decoded as an upload decodes them (``archscreen predict``).

Layouts, the same for a folder and a zip (paths relative to the folder or the archive's root):

* ``FILE``: a flat folder of images, no labels (predictions only);
* ``CLASS/FILE``: class folders (the ImageFolder layout an ``image_zip`` upload takes);
* ``SPLIT/CLASS/FILE`` with ``SPLIT`` one of ``train``, ``val``, ``test``: ``split`` keeps one.

One layout per input: mixing depths is an error naming a file, as at upload. Dot-files, dot-folders
and ``__MACOSX/`` are skipped, as at upload; any other file must be a readable image (a stray
``notes.txt`` is an error naming it, not silently skipped, so that a labelled folder's accuracy is
over every file in it). Files are in sorted path order.

Each image is decoded by :func:`~archscreen.core.data.images.decode_image`, the upload's own
function: Pillow with its decompression-bomb limit, converted to the model's mode (``L`` for one
channel, ``RGB`` for three, as an upload converts every image to the dataset's mode) and resized
(bilinear, stretched) to the model's input size. So a file that was part of an upload becomes the
same uint8 array the dataset holds, bit for bit. Images are read and decoded ``batch`` at a time:
memory holds one batch, never the folder or the archive.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from .base import DatasetError
from .images import DEFAULT_MAX_MEMBER_BYTES, SPLITS, ImageLimits, ImageMode, decode_image

Reader = Callable[[], Iterator[bytes]]  # a fresh pass over the files' bytes, in file order
# a prediction is the user's own file on their machine: bound one image, not the whole input
PREDICT_LIMITS = ImageLimits(max_bytes=2**62)


@dataclass(frozen=True)
class ImageFiles:
    """The images of a folder or zip: names (relative paths), class-folder names (None for a flat
    folder) and a reader of their bytes."""

    names: list[str]
    labels: list[str] | None
    read: Reader


def _skipped(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _layout(paths: list[str], split: str | None) -> tuple[list[int], list[str] | None]:
    """The kept paths' indices and their class names, by the layout of ``paths`` (sorted)."""
    depths = {len(PurePosixPath(p).parts) for p in paths}
    if len(depths) > 1 or not depths <= {1, 2, 3}:
        odd = (
            next(p for p in paths if len(PurePosixPath(p).parts) != min(depths))
            if len(depths) > 1
            else paths[0]
        )
        raise DatasetError(
            f"{odd}: expected FILE, CLASS/FILE or SPLIT/CLASS/FILE for every image (one layout)"
        )
    depth = depths.pop()
    parts = [PurePosixPath(p).parts for p in paths]
    if depth == 3:
        bad = next((p for p, q in zip(paths, parts, strict=True) if q[0] not in SPLITS), None)
        if bad is not None:
            raise DatasetError(f"{bad}: the first folder of SPLIT/CLASS/FILE must be train, val or test")
        keep = [i for i, q in enumerate(parts) if split is None or q[0] == split]
        if not keep:
            raise DatasetError(f"no images in a {split}/ folder")
        return keep, [parts[i][1] for i in keep]
    if split is not None:
        raise DatasetError(f"--split {split}: the images are not in train/val/test folders")
    return list(range(len(paths))), ([q[0] for q in parts] if depth == 2 else None)


def _folder(root: Path, split: str | None) -> ImageFiles:
    paths: list[str] = []
    for here, dirs, files in os.walk(root):  # symlinked folders are not followed
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")
        rel = Path(here).relative_to(root)
        paths += [(rel / f).as_posix() for f in files if not f.startswith(".")]
    paths.sort()
    if not paths:
        raise DatasetError(f"{root}: no images in the folder")
    keep, labels = _layout(paths, split)
    names = [paths[i] for i in keep]

    def read() -> Iterator[bytes]:
        for name in names:
            path = root / name
            try:
                if path.stat().st_size > DEFAULT_MAX_MEMBER_BYTES:
                    raise DatasetError(
                        f"{name}: over {DEFAULT_MAX_MEMBER_BYTES:,} bytes; not an image to predict on"
                    )
                yield path.read_bytes()
            except OSError as exc:
                raise DatasetError(f"{name}: cannot read ({exc.strerror or exc})") from None

    return ImageFiles(names, labels, read)


def _zip(path: Path, split: str | None) -> ImageFiles:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{path}: not a zip archive ({' '.join(str(exc).split())[:200]})") from None
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        p = PurePosixPath(info.filename.replace("\\", "/"))
        if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
            raise DatasetError(f"{info.filename}: a member name outside the archive (absolute, or with '..')")
        if not _skipped(p.parts):
            members[p.as_posix()] = info
    paths = sorted(members)
    if not paths:
        raise DatasetError(f"{path}: the zip holds no images")
    keep, labels = _layout(paths, split)
    names = [paths[i] for i in keep]

    def read() -> Iterator[bytes]:
        with zipfile.ZipFile(path) as zf:
            for name in names:
                info = members[name]
                if info.file_size > DEFAULT_MAX_MEMBER_BYTES:
                    raise DatasetError(f"{name}: unpacks to {info.file_size:,} bytes (a zip bomb?)")
                try:
                    with zf.open(info) as f:
                        data = f.read(DEFAULT_MAX_MEMBER_BYTES + 1)
                except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
                    raise DatasetError(
                        f"{name}: cannot unpack ({' '.join(str(exc).split())[:200]})"
                    ) from None
                yield data

    return ImageFiles(names, labels, read)


def image_files(path: Path, split: str | None = None) -> ImageFiles:
    """The images of a folder or a ``.zip`` at ``path``; ``split`` keeps that split's folder."""
    if path.is_dir():
        return _folder(path, split)
    if path.is_file():
        return _zip(path, split)
    raise DatasetError(f"{path}: no such file or folder")


def image_batches(
    files: ImageFiles, mode: ImageMode, size: tuple[int, int], batch: int
) -> Iterator[tuple[int, np.ndarray]]:
    """``(first index, (B, C, H, W) uint8)`` for each batch of ``files``, decoded as at upload."""
    pixels: list[np.ndarray] = []
    start = 0
    for k, (name, data) in enumerate(zip(files.names, files.read(), strict=True)):
        pixels.append(decode_image(data, name, PREDICT_LIMITS, mode, size))
        if len(pixels) == batch:
            yield start, np.stack(pixels)
            start, pixels = k + 1, []
    if pixels:
        yield start, np.stack(pixels)

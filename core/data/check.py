"""Validate an uploaded dataset file and write its canonical ``.npz`` (``-m archscreen.core.data.check``).

Run by the service in a child process with memory and CPU limits (a hostile file can cost that
process, never the API). Reads ``SRC`` as ``--format`` (``npz``, ``parquet`` or ``csv``; images:
``image_zip`` or ``image_parquet``, :mod:`archscreen.core.data.images`), applies
the ``.npz`` rules of :mod:`archscreen.core.data.npz` (keys, shapes, dtypes, label ranges,
NaN/inf, ``allow_pickle=False``, the uncompressed-size limit checked without inflating), and
writes the arrays the workers will read to ``--out`` (for an ``.npz`` upload: the file itself is
canonical and nothing is written). On success it prints one JSON object (the dataset's facts);
on a bad file it prints one line to stderr and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .base import DatasetError
from .images import IMAGE_FORMATS, is_image_parquet, write_image_npz
from .npz import NpzDataset
from .tabular import table_to_arrays


def inspect(
    src: Path, fmt: str, *, label_column: str | None, out: Path, max_bytes: int, **image_options: Any
) -> dict[str, Any]:
    """Validate ``src``; returns the facts the API stores. Raises :class:`DatasetError`."""
    classes: list[str] | None = None
    image: dict[str, object] | None = None
    if fmt == "parquet" and is_image_parquet(src):
        fmt = "image_parquet"  # a label beside an image-bytes column: images, not features
    if fmt in IMAGE_FORMATS:
        classes, image = write_image_npz(src, fmt, out, max_bytes, label_column=label_column, **image_options)
        canonical = out
    elif fmt == "npz":
        canonical = src
    elif fmt in ("parquet", "csv"):
        if not label_column:
            raise DatasetError(f"a {fmt} table needs label_column (the column holding the targets)")
        arrays, classes = table_to_arrays(src, fmt, label_column)  # type: ignore[arg-type]
        np.savez(out, **arrays)  # type: ignore[arg-type]
        canonical = out
    else:
        raise DatasetError(f"unknown format {fmt!r}; expected npz, parquet or csv")
    dataset = NpzDataset(canonical, max_bytes=max_bytes)
    info = dataset.info()
    splits = dataset.load(seed=0)
    facts = asdict(info)
    facts.pop("name")
    facts["input_shape"] = list(info.input_shape)
    facts["split_sizes"] = {
        "train": len(splits.x_train),
        "val": len(splits.x_val),
        "test": len(splits.x_test),
    }
    facts["classes"] = classes
    facts["image"] = image
    facts["format"] = fmt
    facts["canonical"] = str(canonical)
    return facts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m archscreen.core.data.check", description=__doc__)
    ap.add_argument("src", type=Path)
    ap.add_argument("--format", required=True, choices=["npz", "parquet", "csv", *IMAGE_FORMATS])
    ap.add_argument("--label-column")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--max-bytes", type=int, required=True)
    ap.add_argument("--image-size", help="images: N or HxW (default: the median size, capped)")
    ap.add_argument("--image-mode", choices=["L", "RGB"], help="images (default: RGB if any is colour)")
    args = ap.parse_args(argv)
    try:
        facts = inspect(
            args.src,
            args.format,
            label_column=args.label_column,
            out=args.out,
            max_bytes=args.max_bytes,
            size=args.image_size,
            mode=args.image_mode,
        )
    except DatasetError as exc:
        message = " ".join(str(exc).split()).replace(str(args.src) + ": ", "")
        print(message[:500], file=sys.stderr)
        return 2
    except MemoryError:
        print("the file needs more memory to read than the validation limit allows", file=sys.stderr)
        return 2
    print(json.dumps(facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())

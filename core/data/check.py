"""Validate an uploaded dataset file and write its canonical ``.npz`` (``-m archscreen.core.data.check``).

Run by the service in a child process with memory and CPU limits (a hostile file can cost that
process, never the API). Reads ``SRC`` as ``--format`` (``npz``, ``parquet`` or ``csv``; images:
``image_zip`` or ``image_parquet``, :mod:`archscreen.core.data.images`), applies
the ``.npz`` rules of :mod:`archscreen.core.data.npz` (keys, shapes, dtypes, label ranges,
NaN/inf, ``allow_pickle=False``, the uncompressed-size limit checked without inflating), and
writes the arrays the workers will read to ``--out`` (for an ``.npz`` upload: the file itself is
canonical and nothing is written). On success it prints one JSON object (the dataset's facts).

A table is measured from its metadata first (:mod:`.table_size`: Parquet footer, CSV header and a
streamed row count) and refused before anything is converted when ``rows × columns`` float32
values, or its decoded bytes, pass ``--max-bytes``.

Exit status: 0 valid; 2 a bad file (one line on stderr); 3 over a size limit (one JSON line on
stderr: ``detail``, ``limit``, ``current``); 4 out of memory (the parent's address-space limit).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from archscreen.core.table_options import DEFAULT_MAX_CATEGORIES, TableOptions

from .base import DatasetError
from .images import IMAGE_FORMATS, is_image_parquet, write_image_npz
from .npz import NpzDataset, check_contiguous_ids
from .preprocess import STATE_KEY, TablePreprocessor
from .table_size import TableTooLarge, check_table_size, measure_table
from .tabular import table_to_arrays

EXIT_INVALID, EXIT_TOO_LARGE, EXIT_OUT_OF_MEMORY = 2, 3, 4


def inspect(
    src: Path,
    fmt: str,
    *,
    label_column: str | None,
    out: Path,
    max_bytes: int,
    options: TableOptions | None = None,
    **image_options: Any,
) -> dict[str, Any]:
    """Validate ``src``; returns the facts the API stores. Raises :class:`DatasetError`.

    ``image_options`` (``size``, ``mode``) apply to the image formats only."""
    classes: list[str] | None = None
    table_facts: dict[str, Any] = {}
    image: dict[str, object] | None = None
    if fmt == "parquet" and is_image_parquet(src):
        fmt = "image_parquet"  # a label beside an image-bytes column: images, not features
    if fmt in IMAGE_FORMATS:  # before check_table_size, which would judge an image Parquet as a table
        classes, image = write_image_npz(src, fmt, out, max_bytes, label_column=label_column, **image_options)
        if classes is None:  # integer labels: the ids must be 0..K-1, as for a table
            with np.load(out, allow_pickle=False) as arrays:
                labels = [arrays[key] for key in arrays.files if key.startswith("y_")]
            check_contiguous_ids(labels, f"label column {label_column!r}")
        canonical = out
    elif any(v is not None for v in image_options.values()):
        raise DatasetError(f"image_size and image_mode are for images; this {fmt} file holds none")
    elif fmt == "npz":
        canonical = src
    elif fmt in ("parquet", "csv"):
        if not label_column:
            raise DatasetError(f"a {fmt} table needs label_column (the column holding the targets)")
        check_table_size(measure_table(src, fmt), max_bytes)  # before converting anything
        arrays, classes, table_facts = table_to_arrays(src, fmt, label_column, options)  # type: ignore[arg-type]
        labels = [a for key, a in arrays.items() if key.startswith("y_")]
        if classes is None and labels[0].dtype.kind in "biu":
            check_contiguous_ids(labels, f"label column {label_column!r}")
        table_facts["preprocessing"] = _preprocessing_report(arrays[STATE_KEY])
        np.savez(out, **arrays)  # type: ignore[arg-type]
        canonical = out
    else:
        raise DatasetError(f"unknown format {fmt!r}; expected npz, parquet or csv")
    dataset = NpzDataset(canonical, max_bytes=max_bytes)
    info = dataset.info()
    facts = asdict(info)
    facts.pop("name")
    facts["input_shape"] = list(info.input_shape)
    facts["split_sizes"] = dataset.split_sizes()  # no tensors: the split sizes need no copy
    facts["classes"] = classes
    if info.task == "classification":
        facts["class_counts"] = dataset.class_counts()  # from the labels alone, like split_sizes
    facts.update(table_facts)
    facts["image"] = image
    facts["format"] = fmt  # an image Parquet is found in here, not by the API
    facts["canonical"] = str(canonical)
    return facts


def _preprocessing_report(state_bytes: np.ndarray) -> dict[str, Any]:
    prep = TablePreprocessor.from_bytes(state_bytes)
    return {
        "version": prep.version,
        "standardize": prep.standardize,
        "max_categories": prep.max_categories,
        "features": len(prep.feature_names()),
        "columns": prep.report(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m archscreen.core.data.check", description=__doc__)
    ap.add_argument("src", type=Path)
    ap.add_argument("--format", required=True, choices=["npz", "parquet", "csv", *IMAGE_FORMATS])
    ap.add_argument("--label-column")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--max-bytes", type=int, required=True)
    ap.add_argument("--no-standardize", action="store_true", help="keep numeric columns as they are")
    ap.add_argument("--categorical-column", action="append", default=[], help="an integer column to one-hot")
    ap.add_argument("--max-categories", type=int, default=DEFAULT_MAX_CATEGORIES)
    ap.add_argument("--image-size", help="images: N or HxW (default: the median size, capped)")
    ap.add_argument("--image-mode", choices=["L", "RGB"], help="images (default: RGB if any is colour)")
    args = ap.parse_args(argv)
    options = TableOptions(
        standardize=not args.no_standardize,
        categorical_columns=tuple(args.categorical_column),
        max_categories=args.max_categories,
    )
    try:
        facts = inspect(
            args.src,
            args.format,
            label_column=args.label_column,
            out=args.out,
            max_bytes=args.max_bytes,
            options=options,
            size=args.image_size,
            mode=args.image_mode,
        )
    except TableTooLarge as exc:
        print(json.dumps({"detail": str(exc), "limit": exc.limit, "current": exc.current}), file=sys.stderr)
        return EXIT_TOO_LARGE
    except DatasetError as exc:
        message = " ".join(str(exc).split()).replace(str(args.src) + ": ", "")
        print(message[:500], file=sys.stderr)
        return EXIT_INVALID
    except MemoryError:
        print("the file needs more memory to read than the validation limit allows", file=sys.stderr)
        return EXIT_OUT_OF_MEMORY
    print(json.dumps(facts))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""User tables (Parquet or CSV) turned into the arrays of a ``.npz`` dataset.

A table has numeric feature columns and one label column, named by the user. Read with pyarrow
(no hand-written parser). The rules:

* every column other than the label (and ``split``, below) is a feature; each must be numeric
  (integer, float or bool) with no nulls; features become ``x`` of shape ``(N, F)``, float32;
* an integer or bool label is a class id (``classification``); a string label is a class name,
  mapped to ids in sorted order (the mapping is returned); a float label is a ``regression``
  target;
* an optional ``split`` column with values ``train``/``val``/``test`` assigns rows to splits;
  without it every row is ``train`` (the ``.npz`` rules then carve val and test from it).

The output goes through :class:`~archscreen.core.data.npz.NpzDataset`'s validation like any
``.npz`` (finite values, label ranges, sizes). Every problem is a :class:`DatasetError` with one
line naming the column.
"""

from __future__ import annotations

import os
from typing import Literal

import numpy as np

from .base import DatasetError
from .table_size import CSV_BLOCK_BYTES

TableFormat = Literal["parquet", "csv"]
SPLIT_COLUMN = "split"


def read_table(path: str | os.PathLike[str], fmt: TableFormat) -> object:
    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    try:
        if fmt == "parquet":
            return pq.read_table(path)
        # a block must hold the header row (pyarrow's default 1 MiB read a longer one as "Empty CSV")
        return pa_csv.read_csv(path, read_options=pa_csv.ReadOptions(block_size=CSV_BLOCK_BYTES))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DatasetError(f"cannot read the {fmt} table: {' '.join(str(exc).split())[:300]}") from None


def table_to_arrays(
    path: str | os.PathLike[str], fmt: TableFormat, label_column: str
) -> tuple[dict[str, np.ndarray], list[str] | None]:
    """``{x_train, y_train[, x_val, y_val, x_test, y_test]}`` and the class names (string labels)."""
    import pyarrow as pa

    table = read_table(path, fmt)
    assert isinstance(table, pa.Table)
    names = list(table.column_names)
    if label_column not in names:
        raise DatasetError(
            f"no label column {label_column!r}; the table's columns: {', '.join(names[:20])}"
            + (" ..." if len(names) > 20 else "")
        )
    if table.num_rows == 0:
        raise DatasetError("the table has no rows")
    features = [n for n in names if n not in (label_column, SPLIT_COLUMN)]
    if not features:
        raise DatasetError(f"no feature columns besides the label {label_column!r}")
    columns = []
    for name in features:
        col = table.column(name)
        kind = col.type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
            raise DatasetError(f"feature column {name!r} has type {kind}; features must be numeric")
        if col.null_count:
            raise DatasetError(f"feature column {name!r} has {col.null_count} missing values")
        columns.append(col.to_numpy(zero_copy_only=False).astype(np.float32, copy=False))
    x = np.stack(columns, axis=1)

    label = table.column(label_column)
    if label.null_count:
        raise DatasetError(f"label column {label_column!r} has {label.null_count} missing values")
    classes: list[str] | None = None
    kind = label.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind):
        values = np.asarray(label.to_pylist(), dtype=object).astype(str)
        classes = sorted(set(values.tolist()))
        index = {c: i for i, c in enumerate(classes)}
        y = np.fromiter((index[v] for v in values), dtype=np.int64, count=len(values))
    elif pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        y = label.to_numpy(zero_copy_only=False).astype(np.int64)
    elif pa.types.is_floating(kind):
        y = label.to_numpy(zero_copy_only=False).astype(np.float32)
    else:
        raise DatasetError(
            f"label column {label_column!r} has type {kind}; expected integer, string or float"
        )

    if SPLIT_COLUMN not in names:
        return {"x_train": x, "y_train": y}, classes
    split = np.asarray(table.column(SPLIT_COLUMN).to_pylist(), dtype=object)
    unknown = sorted({str(v) for v in split} - {"train", "val", "test"})
    if unknown:
        raise DatasetError(f"column 'split' holds {unknown[:5]}; expected train, val or test")
    out: dict[str, np.ndarray] = {}
    for part in ("train", "val", "test"):
        rows = split == part
        if rows.any():
            out[f"x_{part}"], out[f"y_{part}"] = x[rows], y[rows]
    if "x_train" not in out:
        raise DatasetError("column 'split' names no train rows")
    return out, classes

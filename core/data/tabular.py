"""User tables (Parquet or CSV) turned into the arrays of a ``.npz`` dataset.

A table has feature columns and one label column, named by the user. Read with pyarrow
(no hand-written parser). The rules:

* every column other than the label (and ``split``, below) is a feature: numeric (integer, float,
  bool) or categorical (string, or an integer column named in ``categorical_columns``); missing
  values are allowed. The features go through a :class:`~archscreen.core.data.preprocess.TablePreprocessor`
  fitted on the train rows only (standardisation, median imputation + missing indicators, one-hot
  with an "other" bucket) and become ``x`` of shape ``(N, F)``, float32;
* an integer or bool label is a class id (``classification``); a string label is a class name,
  mapped to ids in sorted order (the mapping is returned); a float label is a ``regression``
  target. A row without a label is dropped (the count is returned);
* an optional ``split`` column with values ``train``/``val``/``test`` assigns rows to splits; a
  split it lacks (or all of them, without the column) is carved from the train rows here, at
  upload, by the ``.npz`` rule with seed 0. **Deviation from the ``.npz`` rule** (where each seed
  carves its own split): a table's splits are fixed at upload, so that the preprocessing every run
  trains with was fitted on exactly the rows it trains on.

The output (with the preprocessing's state under ``preprocessing_json``) goes through
:class:`~archscreen.core.data.npz.NpzDataset`'s validation like any ``.npz`` (finite values, label
ranges, sizes). Every problem is a :class:`DatasetError` with one line naming the column.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any, Literal

import numpy as np

from archscreen.core.table_options import TableOptions

from ._util import permutation_split
from .base import DatasetError
from .npz import TEST_FRACTION, VAL_FRACTION
from .preprocess import STATE_KEY, TablePreprocessor
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
    path: str | os.PathLike[str],
    fmt: TableFormat,
    label_column: str,
    options: TableOptions | None = None,
) -> tuple[dict[str, np.ndarray], list[str] | None, dict[str, Any]]:
    """``{x_train, y_train, x_val, y_val, x_test, y_test, preprocessing_json}``, the class names
    (string labels) and the table's facts (rows dropped for a missing label)."""
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
    return preprocess_table(table, features, label_column, options or TableOptions())


# ------------------------------------------------------------------ preprocessing (issue 28)
def feature_columns(
    table: Any, features: list[str], categorical_columns: tuple[str, ...] = ()
) -> dict[str, np.ndarray]:
    """Each feature column as :meth:`TablePreprocessor.fit` takes it: float64 with ``NaN`` for a
    missing number, or an object array of ``str``/``None`` for a categorical column."""
    import pyarrow as pa

    unknown = sorted(set(categorical_columns) - set(features))
    if unknown:
        raise DatasetError(f"categorical_columns names {unknown[0]!r}, which is not a feature column")
    raw: dict[str, np.ndarray] = {}
    for name in features:
        col = table.column(name)
        kind = col.type
        if pa.types.is_dictionary(kind):
            col, kind = col.cast(kind.value_type), kind.value_type
        textual = pa.types.is_string(kind) or pa.types.is_large_string(kind)
        whole = pa.types.is_integer(kind) or pa.types.is_boolean(kind)
        if textual or (name in categorical_columns and whole):
            values = col.to_pylist()
            raw[name] = np.asarray([v if v is None or textual else str(int(v)) for v in values], dtype=object)
        elif whole or pa.types.is_floating(kind) or pa.types.is_null(kind):
            if name in categorical_columns:
                raise DatasetError(f"categorical column {name!r} has type {kind}; expected integer or string")
            raw[name] = col.to_numpy(zero_copy_only=False).astype(np.float64)
        else:
            raise DatasetError(
                f"feature column {name!r} has type {kind}; features must be numbers, booleans or strings"
            )
    return raw


def _labels(table: Any, label_column: str) -> tuple[np.ndarray, list[str] | None, np.ndarray]:
    """(y of the labelled rows, class names for string labels, the mask of labelled rows)."""
    import pyarrow as pa

    label = table.column(label_column)
    kind = label.type
    if pa.types.is_dictionary(kind):
        label, kind = label.cast(kind.value_type), kind.value_type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        values = np.asarray(label.to_pylist(), dtype=object)
        keep = np.asarray([v is not None for v in values], dtype=bool)
        classes = sorted(set(values[keep].tolist()))
        index = {c: i for i, c in enumerate(classes)}
        y = np.fromiter((index[v] for v in values[keep]), dtype=np.int64, count=int(keep.sum()))
        return y, classes, keep
    if pa.types.is_integer(kind) or pa.types.is_boolean(kind) or pa.types.is_floating(kind):
        numbers = label.to_numpy(zero_copy_only=False).astype(np.float64)
        keep = ~np.isnan(numbers)
        if pa.types.is_floating(kind):
            return numbers[keep].astype(np.float32), None, keep
        return numbers[keep].astype(np.int64), None, keep
    raise DatasetError(f"label column {label_column!r} has type {kind}; expected integer, string or float")


def _split_rows(table: Any, keep: np.ndarray) -> dict[str, np.ndarray]:
    """Row indices (of the labelled rows) per split: the ``split`` column's, and a val/test split
    it lacks carved from its train rows by the ``.npz`` rule (15 % each, seed 0). Carved here, at
    upload, so that the preprocessing is fitted on the rows every run trains on."""
    n = int(keep.sum())
    if SPLIT_COLUMN in table.column_names:
        split = np.asarray(table.column(SPLIT_COLUMN).to_pylist(), dtype=object)[keep]
        unknown = sorted({str(v) for v in split} - {"train", "val", "test"})
        if unknown:
            raise DatasetError(f"column 'split' holds {unknown[:5]}; expected train, val or test")
    else:
        split = np.full(n, "train", dtype=object)
    rows = {part: np.flatnonzero(split == part) for part in ("train", "val", "test")}
    if not len(rows["train"]):
        raise DatasetError("column 'split' names no train rows" if n else "no row has a label")
    train = rows["train"]
    n_val = 0 if len(rows["val"]) else max(1, round(len(train) * VAL_FRACTION))
    n_test = 0 if len(rows["test"]) else max(1, round(len(train) * TEST_FRACTION))
    if n_val or n_test:
        if len(train) - n_val - n_test < 1:
            raise DatasetError(
                f"only {len(train)} train rows: too few to carve out the missing validation/test split"
            )
        tr, va, te = permutation_split(len(train), n_val, n_test, seed=0)
        rows["train"] = train[tr]
        if n_val:
            rows["val"] = train[va]
        if n_test:
            rows["test"] = train[te]
    return rows


def preprocess_table(
    table: Any, features: list[str], label_column: str, options: TableOptions
) -> tuple[dict[str, np.ndarray], list[str] | None, dict[str, Any]]:
    """Labels, splits and the :class:`TablePreprocessor` fitted on the train rows, applied to all."""
    y, classes, keep = _labels(table, label_column)
    raw = {
        name: values[keep]
        for name, values in feature_columns(table, features, options.categorical_columns).items()
    }
    rows = _split_rows(table, keep)
    prep = replace(
        TablePreprocessor.fit(
            {name: values[rows["train"]] for name, values in raw.items()},
            standardize=options.standardize,
            max_categories=options.max_categories,
        ),
        label_column=label_column,
        classes=classes,
    )
    x = prep.transform(prep.encode_raw(raw))
    arrays: dict[str, np.ndarray] = {STATE_KEY: prep.to_bytes()}
    for part, idx in rows.items():
        arrays[f"x_{part}"], arrays[f"y_{part}"] = x[idx], y[idx]
    facts = {"dropped_rows_missing_label": int(len(keep) - keep.sum()), "options": options.key()}
    return arrays, classes, facts

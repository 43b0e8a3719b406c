"""A table's preprocessing: fitted on the train rows only, its state round-trips, and the exported
model's input module computes the same features bit for bit."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from archscreen.core.data import DatasetError, NpzDataset
from archscreen.core.data.preprocess import (
    STATE_KEY,
    CategoricalColumn,
    NumericColumn,
    TablePreprocessor,
    read_state,
)
from archscreen.core.data.tabular import feature_columns, table_to_arrays
from archscreen.core.table_options import TableOptions
from archscreen.core.training.inputs import TableInput


def mixed_table(n: int = 200, seed: int = 0) -> pa.Table:
    """A numeric column with gaps and a wide range, a string column with gaps, an integer code column,
    a string label with two gaps, and a split column."""
    rng = np.random.default_rng(seed)
    amount = rng.lognormal(5, 2, n)
    amount[rng.random(n) < 0.1] = np.nan
    clinic = rng.choice(
        np.array(["north", "south", "east", "west", "x1", "x2", None], dtype=object), n
    ).tolist()
    label = rng.choice(["sick", "well"], n).astype(object)
    label[[3, 7]] = None
    split = ["train"] * (n - 40) + ["val"] * 20 + ["test"] * 20
    return pa.table(
        {"amount": amount, "clinic": clinic, "code": rng.integers(0, 4, n), "label": label, "split": split}
    )


def write(table: pa.Table, path: Path) -> Path:
    pq.write_table(table, path)
    return path


def test_fitted_on_train_rows_only_and_reported(tmp_path: Path) -> None:
    table = mixed_table()
    arrays, classes, facts = table_to_arrays(write(table, tmp_path / "t.parquet"), "parquet", "label")
    assert classes == ["sick", "well"] and facts["dropped_rows_missing_label"] == 2
    prep = TablePreprocessor.from_bytes(arrays[STATE_KEY])
    amount = np.asarray(table.column("amount").to_numpy(zero_copy_only=False))
    split = np.asarray(table.column("split").to_pylist())
    labelled = np.asarray([v is not None for v in table.column("label").to_pylist()])
    train = amount[(split == "train") & labelled]
    col = prep.columns[0]
    assert isinstance(col, NumericColumn) and col.missing_indicator
    assert col.mean == pytest.approx(np.nanmean(train), rel=1e-6)
    assert col.scale == pytest.approx(np.nanstd(train), rel=1e-6)
    assert col.median == pytest.approx(np.nanmedian(train), rel=1e-6)
    # standardised on train: mean 0, sd 1 there (the imputed gaps sit at the median, not the mean)
    x_train = arrays["x_train"]
    present = ~np.isnan(amount[(split == "train") & labelled])
    assert abs(x_train[present, 0].mean()) < 1e-5 and x_train[present, 0].std() == pytest.approx(1, rel=1e-4)
    assert prep.feature_names()[:3] == ["amount", "code", "amount__missing"]
    assert x_train.shape[1] == len(prep.feature_names()) == 1 + 1 + 1 + (6 + 1)
    assert (len(arrays["x_train"]), len(arrays["x_val"]), len(arrays["x_test"])) == (158, 20, 20)


def test_max_categories_other_bucket_and_integer_categoricals(tmp_path: Path) -> None:
    opts = TableOptions(categorical_columns=("code",), max_categories=3, standardize=False)
    arrays, _, facts = table_to_arrays(write(mixed_table(), tmp_path / "t.parquet"), "parquet", "label", opts)
    prep = TablePreprocessor.from_bytes(arrays[STATE_KEY])
    clinic, code = prep.columns[1], prep.columns[2]
    assert isinstance(clinic, CategoricalColumn) and len(clinic.categories) == 3
    assert clinic.distinct_train == 6 and clinic.missing_train > 0
    assert isinstance(code, CategoricalColumn) and set(code.categories) <= {"0", "1", "2", "3"}
    assert not prep.standardize and facts["options"] == opts.key()
    # every row has exactly one hot slot per categorical column
    x = arrays["x_train"]
    onehots = x[:, -8:]
    assert (onehots[:, :4].sum(axis=1) == 1).all() and (onehots[:, 4:].sum(axis=1) == 1).all()


def test_state_round_trips_through_json_and_the_npz(tmp_path: Path) -> None:
    arrays, _, _ = table_to_arrays(write(mixed_table(), tmp_path / "t.parquet"), "parquet", "label")
    prep = TablePreprocessor.from_bytes(arrays[STATE_KEY])
    again = TablePreprocessor.from_state(json.loads(json.dumps(prep.to_state())))
    assert again == prep
    np.savez(tmp_path / "c.npz", **arrays)
    assert read_state(str(tmp_path / "c.npz")) == prep.to_state()
    ds = NpzDataset(tmp_path / "c.npz")  # the extra key is ignored; the splits are the table's
    assert ds.load(0).sizes() == ds.load(1).sizes() == {"train": 158, "val": 20, "test": 20}


def test_the_input_module_matches_the_numpy_transform_bit_for_bit(tmp_path: Path) -> None:
    table = mixed_table(300, seed=1)
    arrays, _, _ = table_to_arrays(write(table, tmp_path / "t.parquet"), "parquet", "label")
    prep = TablePreprocessor.from_bytes(arrays[STATE_KEY])
    raw = feature_columns(table, ["amount", "clinic", "code"])
    raw["clinic"][:5] = ["unseen", None, "north", "x2", "zzz"]  # unknown values go to "other"
    encoded = prep.encode_raw(raw)
    expected = prep.transform(encoded)
    got = TableInput(prep)(torch.from_numpy(encoded)).numpy()
    assert got.dtype == np.float32 and np.array_equal(got, expected)


@pytest.mark.parametrize(
    "columns,options,message",
    [
        ({"a": [1.0, np.inf, 2.0] * 10}, TableOptions(), "feature column 'a' has infinite values"),
        ({"a": [1.0, 2.0, 3.0] * 10}, TableOptions(categorical_columns=("zz",)), "'zz', which is not"),
        ({"a": [1.0, 2.0, 3.0] * 10}, TableOptions(categorical_columns=("a",)), "categorical column 'a'"),
        ({"a": [1.0, 2.0, 3.0] * 10}, TableOptions(max_categories=0), "max_categories must be"),
        ({"a": [None] * 30}, TableOptions(), "has no value in the train rows"),
    ],
)
def test_bad_columns_and_options_name_the_column(
    tmp_path: Path, columns: dict[str, list[object]], options: TableOptions, message: str
) -> None:
    table = pa.table({**columns, "y": [0, 1, 2] * 10})
    with pytest.raises(DatasetError, match=message):
        table_to_arrays(write(table, tmp_path / "t.parquet"), "parquet", "y", options)


def test_a_csv_with_text_and_gaps_and_no_split_column_is_carved_at_upload(tmp_path: Path) -> None:
    rows = "\n".join(f"{i % 7 if i % 5 else ''},{'ab'[i % 2]},{i % 3 if i % 11 else ''}" for i in range(100))
    path = tmp_path / "t.csv"
    path.write_bytes(("x,kind,y\n" + rows).encode())
    arrays, _, facts = table_to_arrays(path, "csv", "y")
    assert facts["dropped_rows_missing_label"] == 10
    sizes = {k: len(v) for k, v in arrays.items() if k.startswith("x_")}
    assert sizes == {"x_train": 62, "x_val": 14, "x_test": 14}
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # the canonical file is an ordinary .npz

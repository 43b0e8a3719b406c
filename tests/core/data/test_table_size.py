"""Tables measured from their metadata before anything is converted (issue 25, items 2 and 7)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from archscreen.core.data import DatasetError, NpzDataset
from archscreen.core.data.table_size import (
    MAX_CSV_HEADER_BYTES,
    TableTooLarge,
    check_table_size,
    csv_header,
    measure_table,
)
from archscreen.core.data.tabular import read_table
from tests.reliability.hostile_files import hostile_parquet


def test_a_run_length_encoded_parquet_is_measured_by_its_decoded_size(tmp_path: Path) -> None:
    path = hostile_parquet(tmp_path / "zeros.parquet", rows=3_000_000)
    assert path.stat().st_size < 100_000
    size = measure_table(path, "parquet")
    assert (size.rows, size.columns, size.decoded_bytes) == (3_000_000, 2, 6_000_000)
    with pytest.raises(TableTooLarge, match=r"3,000,000 rows × 2 columns .* the limit is 10,000,000") as e:
        check_table_size(size, max_bytes=10_000_000)
    assert (e.value.limit, e.value.current) == (10_000_000, 24_000_000)
    check_table_size(size, max_bytes=24_000_000)


def test_csv_rows_are_counted_streamed_and_columns_read_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text('a,"b,c",y\n1,2,0\n3,4,1\n5,6,0')  # no final newline
    size = measure_table(path, "csv")
    assert (size.rows, size.columns, size.decoded_bytes) == (3, 3, None)


def test_a_csv_header_over_the_limit_says_the_header_is_too_long(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"column_{i}" for i in range(MAX_CSV_HEADER_BYTES // 8)) + "\n")
    with pytest.raises(TableTooLarge, match=r"CSV header \(first line\) is longer than 1,048,576 bytes"):
        csv_header(path)
    (tmp_path / "empty.csv").write_text("\n\n")
    with pytest.raises(DatasetError, match="empty"):
        csv_header(tmp_path / "empty.csv")


def test_a_header_under_the_limit_but_over_pyarrows_default_block_is_read(tmp_path: Path) -> None:
    names = [f"c{i:06d}" for i in range(120_000)]  # 960 KB of header: was "Empty CSV file or block"
    path = tmp_path / "wide.csv"
    path.write_text(",".join(names) + "\n" + ",".join("1" for _ in names) + "\n")
    assert len(path.read_bytes()) > 2**20 - 100_000
    assert read_table(path, "csv").num_columns == len(names)  # type: ignore[attr-defined]


def test_sparse_class_ids_are_refused_naming_the_arrays(tmp_path: Path) -> None:
    buf = io.BytesIO()
    y = np.array([0, 1, 2, 5_000_000] * 10)
    np.savez(buf, x_train=np.zeros((40, 3), np.float32), y_train=y)
    path = tmp_path / "sparse.npz"
    path.write_bytes(buf.getvalue())
    with pytest.raises(
        DatasetError, match=r"y_train holds 4 distinct class ids up to 5,000,000 .*contiguous"
    ):
        NpzDataset(path).info()

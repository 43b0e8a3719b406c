"""How large a user table becomes, read from its metadata before anything is converted.

A 2.2 MB Parquet file of two int8 columns of 3·10⁸ zeros (zstd) decodes to 600 MB and converts
to 2.4 GB of float32 features: the file's size says nothing about its memory. So the validation
child measures the table first and refuses it, naming the limit, before one value is decoded:

* Parquet: the footer gives the row count, the column types and each row group's bytes; the
  decoded size is at least rows × the fixed-width columns' bytes. Nothing is decompressed.
* CSV: the header line (at most :data:`MAX_CSV_HEADER_BYTES`) names the columns; rows are counted
  by streaming the file in 1 MiB chunks (one chunk in memory at a time), as newlines, an upper
  bound (blank lines count as rows here; the reader skips them).

The limit: ``rows × columns × 4`` bytes (every cell as a float32, what the features become) and,
for Parquet, the decoded bytes, each at most ``max_bytes`` (the service passes
``ARCHSCREEN_MAX_DATASET_UNPACKED_BYTES``); at most :data:`MAX_COLUMNS` columns.

These checks stay separate from the conversion (:mod:`.tabular`): they only read metadata.
"""

from __future__ import annotations

import contextlib
import csv
import os
from dataclasses import dataclass

from .base import DatasetError

MAX_CSV_HEADER_BYTES = 1 << 20
# pyarrow's CSV reader needs the header row inside its first block: twice the header limit
CSV_BLOCK_BYTES = 2 * MAX_CSV_HEADER_BYTES
MAX_COLUMNS = 100_000
CELL_BYTES = 4  # a float32 feature value
_CHUNK = 1 << 20


class TableTooLarge(DatasetError):
    """The table is over a size limit (the API answers 413 with ``limit`` and ``current``)."""

    def __init__(self, message: str, limit: int, current: int) -> None:
        super().__init__(message)
        self.limit, self.current = limit, current


@dataclass(frozen=True)
class TableSize:
    rows: int
    columns: int
    decoded_bytes: int | None  # Parquet: the row groups' uncompressed bytes; CSV: unknown

    @property
    def converted_bytes(self) -> int:
        return self.rows * self.columns * CELL_BYTES


def csv_header(path: str | os.PathLike[str]) -> list[str]:
    """The column names of a CSV file's first line; a line over the limit is refused as such."""
    with open(path, "rb") as f:
        head = f.read(MAX_CSV_HEADER_BYTES + 1)
    if not head.strip():
        raise DatasetError("the CSV file is empty (no header line)")
    end = head.find(b"\n")
    if end < 0 and len(head) > MAX_CSV_HEADER_BYTES:
        raise TableTooLarge(
            f"the CSV header (first line) is longer than {MAX_CSV_HEADER_BYTES:,} bytes; "
            "put fewer or shorter column names on it",
            MAX_CSV_HEADER_BYTES,
            len(head),
        )
    line = head[: end if end >= 0 else len(head)].decode("utf-8", errors="replace").rstrip("\r")
    return next(csv.reader([line]), [])


def _csv_rows(path: str | os.PathLike[str]) -> int:
    """Data rows, as newlines after the header (plus an unterminated last line)."""
    newlines, last = 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
    lines = newlines + (0 if last == b"\n" else 1)
    return max(0, lines - 1)


def measure_table(path: str | os.PathLike[str], fmt: str) -> TableSize:
    """Rows, columns and (Parquet) decoded bytes, from metadata only."""
    if fmt == "csv":
        return TableSize(rows=_csv_rows(path), columns=len(csv_header(path)), decoded_bytes=None)
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.read_metadata(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DatasetError(f"cannot read the parquet table: {' '.join(str(exc).split())[:300]}") from None
    # the footer's sizes are of the encoded pages (3·10⁸ zeros run-length encode to 2 MB): the
    # decoded size is at least the rows times the fixed-width columns' bytes
    fixed = 0
    for column in meta.schema.to_arrow_schema():
        with contextlib.suppress(ValueError):  # not fixed-width (strings): counted by the footer
            fixed += max(1, column.type.bit_width // 8)
    encoded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    decoded = max(encoded, meta.num_rows * fixed)
    return TableSize(rows=meta.num_rows, columns=meta.num_columns, decoded_bytes=decoded)


def check_table_size(size: TableSize, max_bytes: int) -> None:
    """Raise :class:`TableTooLarge` naming the limit when ``size`` is over it."""
    if size.columns > MAX_COLUMNS:
        raise TableTooLarge(
            f"the table has {size.columns:,} columns; the limit is {MAX_COLUMNS:,}", MAX_COLUMNS, size.columns
        )
    if size.converted_bytes > max_bytes:
        raise TableTooLarge(
            f"the table has {size.rows:,} rows × {size.columns:,} columns = "
            f"{size.rows * size.columns:,} values, {size.converted_bytes:,} bytes as float32; "
            f"the limit is {max_bytes:,} bytes",
            max_bytes,
            size.converted_bytes,
        )
    if size.decoded_bytes is not None and size.decoded_bytes > max_bytes:
        raise TableTooLarge(
            f"the table decodes to {size.decoded_bytes:,} bytes; the limit is {max_bytes:,} bytes",
            max_bytes,
            size.decoded_bytes,
        )

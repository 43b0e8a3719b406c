"""Hostile upload files, made small on disk (shared by tests/reliability and bench/dataset_upload.py)."""

from __future__ import annotations

from pathlib import Path

# The outside test's file (issue 25): two int8 columns of 3·10⁸ zeros, zstd: 2.2 MB on disk, 600 MB
# decoded, 2.4 GB as float32 features.
HOSTILE_ROWS = 300_000_000
_GROUP = 10_000_000


def hostile_parquet(path: Path, rows: int = HOSTILE_ROWS) -> Path:
    """Write the file in row groups of 10⁷ rows (the writer holds one group: 20 MB)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    zeros = np.zeros(_GROUP, dtype=np.int8)
    group = pa.table({"x": zeros, "label": zeros})
    with pq.ParquetWriter(path, group.schema, compression="zstd") as writer:
        for start in range(0, rows, _GROUP):
            writer.write_table(group.slice(0, min(_GROUP, rows - start)))
    return path

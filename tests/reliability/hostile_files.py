"""Hostile upload files, made small on disk (shared by tests/reliability and bench/dataset_upload.py)."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import psutil

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


class TreeMemory:
    """Peak summed RSS of a process and its descendants, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.baseline = self.sample()
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> int:
        total = 0
        for p in [self.root, *self.root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # a child that has just exited
                total += p.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            time.sleep(0.01)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def extra(self) -> int:
        return self.peak - self.baseline

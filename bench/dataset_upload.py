"""Dataset uploads: throughput, the API's memory, and the time from upload to the first screening epoch.

Starts a real `archscreen api` and `archscreen worker` (SQLite + the embedded broker, or PostgreSQL
+ Redis with --postgres), then:
  1. streams an .npz of --mb MB of random float32 to POST /api/v1/datasets and reports MB/s for
     the transfer alone (the response of a second upload of the same bytes: hashed and deduplicated,
     no validation) and with validation (the first upload), and the API process's peak RSS growth;
  2. uploads a small dataset, creates a study on it with one candidate, and reports the seconds
     from the start of the upload to the first epoch the worker records.
Last line: ``upload_mb_per_s: X``.

With ``--hostile N`` it measures issue 25's goal instead: N concurrent uploads of the outside
test's hostile Parquet (2.2 MB on disk, 3·10⁸ rows × 2 int8 columns) from 5 tenants against a real
API, twice: with the defaults (refused from the table's metadata, or 429 past the validation
slots), and with ``ARCHSCREEN_MAX_DATASET_UNPACKED_BYTES`` raised past the table so that each
validation child converts it until its address-space limit stops it (the backstop). Reported: the
answers, the seconds, and the peak extra resident memory of the API and its children (psutil,
sampled every 10 ms). Last line: ``hostile_peak_extra_mb: X`` (the worse of the two).

    .venv/bin/python bench/dataset_upload.py [--mb 200] [--postgres]
    .venv/bin/python bench/dataset_upload.py --hostile 10
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.reliability.hostile_files import TreeMemory, hostile_parquet  # noqa: E402
from tests.services import REDIS_URL, RunningService, fresh_postgres_url  # noqa: E402


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def upload(svc: RunningService, path: Path, name: str) -> tuple[httpx.Response, float]:
    t0 = time.perf_counter()
    with path.open("rb") as f:
        r = httpx.post(
            f"{svc.url}/api/v1/datasets",
            params={"name": name},
            content=iter(lambda: f.read(1 << 20), b""),
            headers={"Authorization": f"Bearer {svc.token}"},
            timeout=900,
        )
    return r, time.perf_counter() - t0


def hostile_round(tmp: Path, parquet: Path, uploads: int, **settings: str) -> float:
    """One API, ``uploads`` concurrent hostile uploads from 5 tenants; returns the peak extra MB."""
    from concurrent.futures import ThreadPoolExecutor

    svc = RunningService(tmp, f"sqlite:///{tmp / 'data' / 'archscreen.db'}", None, **settings)
    try:
        svc.cli("migrate")
        tokens = [
            svc.cli("token", "create", "--tenant", f"t{i}").stdout.strip().splitlines()[-1] for i in range(5)
        ]
        svc.start_api()
        svc.wait_healthy()
        body = parquet.read_bytes()

        def post(i: int) -> httpx.Response:
            return httpx.post(
                f"{svc.url}/api/v1/datasets",
                params={"name": "zeros.parquet", "label_column": "label"},
                content=body,
                headers={"Authorization": f"Bearer {tokens[i % len(tokens)]}"},
                timeout=600,
            )

        with TreeMemory(svc.procs["api"].pid) as memory, ThreadPoolExecutor(uploads) as pool:
            t0 = time.perf_counter()
            answers = list(pool.map(post, range(uploads)))
            seconds = time.perf_counter() - t0
        codes = sorted(r.status_code for r in answers)
        shown = ", ".join(f"{c} x{codes.count(c)}" for c in sorted(set(codes)))
        print(
            f"  {uploads} concurrent: {shown} in {seconds:.1f} s; API + children peak RSS "
            f"+{memory.extra / 2**20:.0f} MB (baseline {memory.baseline / 2**20:.0f} MB)"
        )
        for r in answers:
            if r.status_code not in (413, 429):
                print(f"    {r.status_code}: {r.text[:200]}")
        return memory.extra / 2**20
    finally:
        svc.stop()


def hostile(uploads: int) -> None:
    with tempfile.TemporaryDirectory(prefix="archscreen-bench-") as tmp_name:
        tmp = Path(tmp_name)
        parquet = hostile_parquet(tmp / "zeros.parquet")
        print(f"hostile parquet: {parquet.stat().st_size / 1e6:.1f} MB on disk, 3e8 rows x 2 int8 columns")
        print("defaults (the table measured from its metadata first):")
        first = hostile_round(tmp / "a", parquet, uploads)
        print(
            "metadata check out of the way (ARCHSCREEN_MAX_DATASET_UNPACKED_BYTES=1e12): the "
            "address-space limit is the backstop"
        )
        second = hostile_round(tmp / "b", parquet, uploads, max_dataset_unpacked_bytes=str(10**12))
        print(f"hostile_peak_extra_mb: {max(first, second):.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--postgres", action="store_true", help="PostgreSQL + Redis instead of SQLite + files")
    ap.add_argument("--hostile", type=int, metavar="N", help="N concurrent hostile uploads (issue 25's goal)")
    args = ap.parse_args()
    if args.hostile:
        hostile(args.hostile)
        return
    with tempfile.TemporaryDirectory(prefix="archscreen-bench-") as tmp_name:
        tmp = Path(tmp_name)
        gen = fresh_postgres_url() if args.postgres else None
        db_url = next(gen) if gen else f"sqlite:///{tmp / 'data' / 'archscreen.db'}"
        svc = RunningService(tmp, db_url, REDIS_URL if args.postgres else None)
        try:
            svc.cli("migrate")
            svc.token = svc.cli("token", "create", "--tenant", "bench").stdout.strip().splitlines()[-1]
            svc.start_api()
            svc.start_worker(concurrency=1)
            svc.wait_ready()
            pid = svc.procs["api"].pid

            big = tmp / "big.npz"
            rng = np.random.default_rng(0)
            x = rng.random((args.mb * 2**20 // (4 * 64), 64), dtype=np.float32)
            np.savez(big, x_train=x, y_train=(x[:, 0] > 0.5).astype(np.int64))
            del x
            size_mb = big.stat().st_size / 2**20
            before = peak_rss_mb(pid)
            first, first_s = upload(svc, big, "big.npz")
            assert first.status_code == 201, first.text
            again, again_s = upload(svc, big, "big.npz")
            assert again.status_code == 200, again.text
            grown = peak_rss_mb(pid) - before
            print(
                f"{size_mb:.0f} MB .npz: first upload (stream + hash + validate in a child + store) "
                f"{first_s:.1f} s = {size_mb / first_s:.0f} MB/s; same bytes again (stream + hash, "
                f"deduplicated) {again_s:.1f} s = {size_mb / again_s:.0f} MB/s"
            )
            print(f"API process peak RSS growth over both uploads: {grown:.0f} MB")

            small = io.BytesIO()
            y = rng.integers(0, 2, 400)
            np.savez(small, x_train=(rng.normal(size=(400, 8)) + y[:, None]).astype(np.float32), y_train=y)
            auth = {"Authorization": f"Bearer {svc.token}"}
            t0 = time.perf_counter()
            ds = httpx.post(
                f"{svc.url}/api/v1/datasets",
                params={"name": "small.npz"},
                content=small.getvalue(),
                headers=auth,
                timeout=120,
            ).json()
            study = httpx.post(
                f"{svc.url}/api/v1/studies",
                headers=auth,
                json={"name": "first-epoch", "dataset": ds["ref"], "screening": {"max_epochs": 3}},
            ).json()
            httpx.post(
                f"{svc.url}/api/v1/studies/{study['id']}/candidates",
                headers=auth,
                json={"spec": {"layers": [{"linear": 16}, "relu"], "head": "classifier"}},
            )
            while True:
                s = httpx.get(f"{svc.url}/api/v1/studies/{study['id']}/summary", headers=auth).json()
                if s["progress"]["epoch"] > 0:
                    break
                time.sleep(0.05)
            elapsed = time.perf_counter() - t0
            print(f"upload of a small dataset to the first recorded screening epoch: {elapsed:.1f} s")
            print(f"upload_mb_per_s: {size_mb / first_s:.1f}")
        finally:
            svc.stop()
            if gen is not None:
                with contextlib.suppress(StopIteration):
                    next(gen)


if __name__ == "__main__":
    main()

"""API latency and intake on loopback: `archscreen api` (one uvicorn process) on PostgreSQL + Redis.

Measures, against a real server process started here:
  1. time to accept 1000 candidate submissions (single-candidate POSTs from 16 concurrent
     clients, each validated by shape inference, stored, and enqueued; nothing trains);
  2. p50/p99 latency of GET /api/v1/candidates/{id} at 64 concurrent clients (bounded:
     --requests in total, --max-seconds at most);
  3. as baseline in the same run, GET /healthz (no database) at the same concurrency;
  4. the 304 path (If-None-Match with the current ETag) beside the full read, closed loop
     (each client sends its next request as soon as the last returns: latency = queueing at
     the server's throughput) and open loop (64 dashboards polling once per second).

The database is a throwaway one created on the local PostgreSQL (dropped at the end); the
Redis queue is unique and deleted at the end. Last line: ``api_p99_ms: X``.

    .venv/bin/python bench/api_load.py [--requests 5000] [--clients 64] [--submissions 1000]

``--reads`` measures the read path alone (issue 19's goals): a study of ``--candidates``
candidates whose screening runs have finished (result and ``--epochs`` curve points each, written
by SQL as a worker would), then closed-loop runs at ``--clients`` connections of GET
/candidates/{id} and GET /studies/{id}/summary, each as a full read and as a 304. With
``--before DIR`` (a source tree of an earlier commit, e.g. ``git archive COMMIT | tar -x -C DIR``)
the same runs go first against that tree's server on the same database, then against this
tree's, back to back in one run, and the ratios are printed:

    .venv/bin/python bench/api_load.py --reads --before /tmp/before_tree
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.services import PG_ADMIN_URL, REDIS_URL, _pg_admin, free_port  # noqa: E402


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q / 100 * (len(xs) - 1)))]


async def hammer(
    url: str, headers: dict[str, str], paths: list[str], clients: int, max_s: float, expect: int = 200
) -> list[float]:
    lat: list[float] = []
    queue = list(reversed(paths))
    deadline = time.perf_counter() + max_s
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:

        async def one() -> None:
            while queue and time.perf_counter() < deadline:
                path = queue.pop()
                t0 = time.perf_counter()
                r = await client.get(path)
                lat.append(time.perf_counter() - t0)
                assert r.status_code == expect, r.text

        await asyncio.gather(*(one() for _ in range(clients)))
    return lat


async def pollers(
    url: str,
    headers: dict[str, str],
    paths: list[str],
    clients: int,
    period_s: float,
    duration_s: float,
    etags: dict[str, str] | None = None,
) -> list[float]:
    """Open loop, as dashboards poll: each client sends one request every ``period_s`` (random phase)."""
    import random

    lat: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=30) as client:

        async def one(k: int) -> None:
            path = paths[k % len(paths)]
            extra = {"If-None-Match": etags[path]} if etags else {}
            await asyncio.sleep(random.random() * period_s)
            end = time.perf_counter() + duration_s
            while time.perf_counter() < end:
                tick = time.perf_counter()
                r = await client.get(path, headers=extra)
                lat.append(time.perf_counter() - tick)
                assert r.status_code in (200, 304), r.text
                await asyncio.sleep(max(0.0, period_s - (time.perf_counter() - tick)))

        await asyncio.gather(*(one(k) for k in range(clients)))
    return lat


async def submit(
    url: str, headers: dict[str, str], study_id: int, n: int, clients: int, offset: int = 0
) -> tuple[float, list[float]]:
    """``n`` single-candidate POSTs at ``clients`` concurrent; returns (total seconds, latencies)."""
    bodies = [
        {"spec": {"name": f"mlp-{i}", "layers": ["flatten", {"linear": 8 + i}, "relu"], "head": "classifier"}}
        for i in range(offset, offset + n)
    ]
    lat: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as client:
        sem = asyncio.Semaphore(clients)

        async def one(body: dict) -> None:
            async with sem:
                t0 = time.perf_counter()
                r = await client.post(f"/api/v1/studies/{study_id}/candidates", json=body)
                lat.append(time.perf_counter() - t0)
                assert r.status_code == 201, r.text

        t0 = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - t0, lat


async def batch_while_polling(
    url: str, headers: dict[str, str], study_id: int, n: int, offset: int
) -> tuple[float, float]:
    """One POST of ``n`` candidates while a client polls /healthz: (POST seconds, worst /healthz s)."""
    body = [
        {"spec": {"name": f"b-{i}", "layers": ["flatten", {"linear": 8 + i}, "relu"], "head": "classifier"}}
        for i in range(offset, offset + n)
    ]
    worst = 0.0
    done = asyncio.Event()
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as client:

        async def poll() -> None:
            nonlocal worst
            while not done.is_set():
                t0 = time.perf_counter()
                await client.get("/healthz")
                worst = max(worst, time.perf_counter() - t0)
                await asyncio.sleep(0.02)

        poller = asyncio.create_task(poll())
        t0 = time.perf_counter()
        r = await client.post(f"/api/v1/studies/{study_id}/candidates", json=body)
        seconds = time.perf_counter() - t0
        done.set()
        await poller
        assert r.status_code == 201, r.text[:300]
    return seconds, worst


def start_load(n: int) -> list[subprocess.Popen[bytes]]:
    """``n`` busy-looping processes: a loaded host (the outside test ran at load >= 5)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def run_wrk(url: str, token: str, candidate_id: int, clients: int, etag: str | None = None) -> float | None:
    """The same GET from wrk (a C load generator: no Python client overhead), if installed."""
    import re
    import shutil

    if shutil.which("wrk") is None:
        print("wrk not installed (apt-get install wrk): client-side figures above only")
        return None
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{clients}",
            "-d10s",
            "--latency",
            "-H",
            f"Authorization: Bearer {token}",
            *(["-H", f"If-None-Match: {etag}"] if etag else []),
            f"{url}/api/v1/candidates/{candidate_id}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    what = "304 (If-None-Match)" if etag else "full read"
    print(
        f"wrk GET /api/v1/candidates/{{id}} {what} at {clients} connections, 10 s: p50 {ms('50%'):.1f} ms, "
        f"p99 {ms('99%'):.1f} ms, {float(rps.group(1)) if rps else float('nan'):.0f} req/s"
    )
    return ms("99%")


def source_env(tree: Path | None) -> dict[str, str]:
    """Environment that makes ``python -m archscreen`` import ``tree`` (an earlier commit's sources)
    instead of this checkout: a view of symlinks with the installed layout (``archscreen.core`` is
    ``core/``) first on ``PYTHONPATH``, ahead of the editable install's finder. Run it outside this
    checkout (``cwd=READS_CWD``): ``python -m`` puts its working directory first on ``sys.path``,
    and this checkout's ``archscreen/`` would win."""
    if tree is None:
        return {}
    view = Path(f"/tmp/archscreen-view-{uuid.uuid4().hex[:8]}") / "archscreen"
    view.mkdir(parents=True)
    for item in (tree / "archscreen").iterdir():
        if item.name != "__pycache__":
            (view / item.name).symlink_to(item.resolve())
    for name in ("core", "api", "worker", "store", "migrations"):
        (view / name).symlink_to((tree / name).resolve())
    return {"PYTHONPATH": str(view.parent)}


READS_CWD = "/"  # not this checkout (see source_env)


def finish_all(db_url: str, study_id: int, epochs: int) -> int:
    """Every screening run of the study finished as a worker leaves it (result, curve), by plain SQL
    (so a tree at an older schema revision reads the same rows). Returns the runs finished."""
    import json
    import random

    import psycopg

    rng = random.Random(0)
    with psycopg.connect(db_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM jobs WHERE study_id = %s", (study_id,))]
        for job_id in ids:
            loss = rng.uniform(0.3, 1.5)
            result = {
                "val_loss": loss,
                "val_accuracy": 1 - loss / 3,
                "test_loss": loss * 1.1,
                "test_accuracy": 0.9 - loss / 3,
                "preferred_lr": 0.01,
                "lr_range": [1e-5, 10.0],
                "switch_posterior": [{"lr": 10 ** (-5 + k), "weight": 1 / 7} for k in range(7)],
                "best_epoch": epochs,
                "stopped_because": "max_epochs",
                "task": "classification",
                "device": "cpu",
            }
            conn.execute(
                "UPDATE jobs SET state = 'succeeded', attempts = 1, result = %s, epoch = %s, max_epochs = %s,"
                " elapsed_s = %s, started_at = now(), finished_at = now(), updated_at = now() WHERE id = %s",
                (json.dumps(result), epochs, epochs, 3.0 * epochs, job_id),
            )
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO epoch_metrics (job_id, epoch, train_loss, val_loss, val_accuracy, seconds,"
                    " extra) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [
                        (job_id, e, loss + 1 / e, loss + 0.5 / e, 1 - loss / 3, 3.0, json.dumps({"lr": 0.01}))
                        for e in range(1, epochs + 1)
                    ],
                )
        conn.execute("UPDATE studies SET version = version + 1 WHERE id = %s", (study_id,))
    return len(ids)


async def closed_loop(
    url: str, headers: dict[str, str], paths: list[str], clients: int, seconds: float, expect: int
) -> tuple[float, list[float]]:
    """``clients`` connections, each sending its next GET as soon as the last returns, for ``seconds``:
    (requests per second, latencies)."""
    lat: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=60) as client:
        deadline = time.perf_counter() + seconds

        async def one(k: int) -> None:
            i = k
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                r = await client.get(paths[i % len(paths)])
                lat.append(time.perf_counter() - t0)
                assert r.status_code == expect, (r.status_code, r.text[:300])
                i += clients

        t0 = time.perf_counter()
        await asyncio.gather(*(one(k) for k in range(clients)))
        return len(lat) / (time.perf_counter() - t0), lat


def wrk_get(
    url: str, headers: dict[str, str], path: str, clients: int, seconds: float
) -> tuple[float, float, float]:
    """wrk (a C load generator, so the client's own CPU does not eat the server's on a small box),
    closed loop at ``clients`` connections: (req/s, p50 ms, p99 ms)."""
    import re

    hdrs = [x for k, v in headers.items() for x in ("-H", f"{k}: {v}")]
    out = subprocess.run(
        ["wrk", "-t2", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--latency", *hdrs, url + path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Non-2xx or 3xx" not in out, out

    def ms(label: str) -> float:
        m = re.search(rf"{label}\s+([\d.]+)(us|ms|s)", out)
        assert m, out
        return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rps, out
    return float(rps.group(1)), ms("50%"), ms("99%")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used: a request's cost that, unlike throughput,
    other processes on a shared box do not change much."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def read_runs(
    url: str, headers: dict[str, str], study_id: int, args: argparse.Namespace, pid: int
) -> dict[str, float]:
    """The four read runs against one server: ``{label: req/s, label cpu: server CPU ms per request}``."""
    cands = httpx.get(f"{url}/api/v1/studies/{study_id}/candidates?limit=500", headers=headers, timeout=60)
    ids = [c["id"] for c in cands.json()["data"]]
    out: dict[str, float] = {}
    summary = f"/api/v1/studies/{study_id}/summary"
    full = {"candidate": [f"/api/v1/candidates/{i}" for i in ids], "summary": [summary]}
    import shutil

    use_wrk = shutil.which("wrk") is not None and not args.httpx
    for what, paths in full.items():
        asyncio.run(closed_loop(url, headers, paths, 8, 2, 200))  # warm-up
        runs: list[tuple[str, dict[str, str] | None, int]] = [("full", {}, 200), ("304", None, 304)]
        for label, sent, expect in runs:
            hdrs = sent or {}
            if sent is None:  # the poller holds the current ETag of the path
                hdrs = {
                    "If-None-Match": httpx.get(url + paths[0], headers=headers, timeout=60).headers["ETag"]
                }
                paths = paths[:1]
            cpu0, t0 = cpu_s(pid), time.perf_counter()
            if use_wrk:  # one path (wrk repeats one URL); its status checked first
                check = httpx.get(url + paths[0], headers={**headers, **hdrs}, timeout=60)
                assert check.status_code == expect, (check.status_code, check.text[:300])
                size = len(check.content)
                rps, p50, p99 = wrk_get(url, {**headers, **hdrs}, paths[0], args.clients, args.read_seconds)
                tool = f"wrk, {size} bytes a response"
            else:
                rps, lat = asyncio.run(
                    closed_loop(url, {**headers, **hdrs}, paths, args.clients, args.read_seconds, expect)
                )
                ms = [x * 1000 for x in lat]
                p50, p99, tool = pct(ms, 50), pct(ms, 99), "httpx"
            # requests served in the run (wrk's rate x the wall time it ran)
            cpu_ms = (cpu_s(pid) - cpu0) * 1000 / max(1.0, rps * (time.perf_counter() - t0))
            print(
                f"  GET {what} {label}: {rps:.0f} req/s at {args.clients} connections ({tool}), "
                f"p50 {p50:.1f} ms, p99 {p99:.1f} ms; server CPU {cpu_ms:.2f} ms per request"
            )
            out[f"{what} {label} cpu"] = cpu_ms
            out[f"{what} {label}"] = rps
            out[f"{what} {label} p99"] = p99
    return out


def reads_main(args: argparse.Namespace) -> None:
    name = f"archscreen_bench_{uuid.uuid4().hex[:8]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db_url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    base_env = {
        **os.environ,
        "ARCHSCREEN_DATABASE_URL": db_url,
        "ARCHSCREEN_BROKER_URL": REDIS_URL,
        "ARCHSCREEN_QUEUE": queue,
        "ARCHSCREEN_DATA_DIR": f"/tmp/{name}",
    }
    cli = [sys.executable, "-m", "archscreen"]
    # this tree twice: without its full-read cache (every full read builds the body: the cold path)
    # and as it ships (a full read of an unchanged version is served from the cache)
    trees: list[tuple[str, Path | None, dict[str, str]]] = (
        [("before", args.before, {})] if args.before else []
    )
    trees += [
        ("this tree, no read cache", None, {"ARCHSCREEN_READ_CACHE_BYTES": "0"}),
        ("this tree", None, {}),
    ]
    print(
        f"read path: {args.candidates} candidates x 1 seed, {args.epochs} curve points each; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores at the start"
    )
    results: dict[str, dict[str, float]] = {}
    token = ""
    study_id = 0
    try:
        for label, tree, extra in trees:
            env = {**base_env, **source_env(tree), **extra}
            subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True, cwd=READS_CWD)
            where = subprocess.run(
                [sys.executable, "-c", "import archscreen.api.app as m; print(m.__file__)"],
                env=env,
                cwd=READS_CWD,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            if not token:
                token = (
                    subprocess.run(
                        [*cli, "token", "create", "--tenant", "bench"],
                        cwd=READS_CWD,
                        env=env,
                        check=True,
                        capture_output=True,
                        text=True,
                    )
                    .stdout.strip()
                    .splitlines()[-1]
                )
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            api = subprocess.Popen(
                [*cli, "api", "--port", str(port), "--log-level", "warning"], env=env, cwd=READS_CWD
            )
            try:
                for _ in range(1200):
                    assert api.poll() is None, "the API process exited"
                    try:
                        if httpx.get(f"{url}/healthz").status_code == 200:
                            break
                    except httpx.HTTPError:
                        time.sleep(0.1)
                headers = {"Authorization": f"Bearer {token}"}
                if not study_id:
                    study = httpx.post(
                        f"{url}/api/v1/studies",
                        headers=headers,
                        json={"name": "reads", "dataset": "mnist1d"},
                        timeout=300,
                    ).json()
                    study_id = study["id"]
                    body = [
                        {
                            "spec": {
                                "name": f"m{i}",
                                "layers": ["flatten", {"linear": 8 + i}, "relu"],
                                "head": "classifier",
                            }
                        }
                        for i in range(args.candidates)
                    ]
                    r = httpx.post(
                        f"{url}/api/v1/studies/{study_id}/candidates", headers=headers, json=body, timeout=300
                    )
                    assert r.status_code == 201, r.text[:300]
                    finish_all(db_url, study_id, args.epochs)
                print(f"{label} (serves {where}):")
                results[label] = read_runs(url, headers, study_id, args, api.pid)
            finally:
                api.terminate()
                api.wait(30)
        new, cold = results["this tree"], results["this tree, no read cache"]
        for what in ("candidate", "summary"):
            print(
                f"{what}: 304 is {new[f'{what} 304'] / new[f'{what} full']:.1f}x the full read's throughput, "
                f"{new[f'{what} full cpu'] / new[f'{what} 304 cpu']:.1f}x cheaper in server CPU per request "
                f"(goal >= 5x); 304 p99 {new[f'{what} 304 p99']:.1f} ms (goal < 50 ms)"
            )
            print(
                f"{what}: without the read cache, full read {cold[f'{what} full']:.0f} req/s, server CPU "
                f"{cold[f'{what} full cpu']:.2f} ms per request; 304 "
                f"{cold[f'{what} full cpu'] / new[f'{what} 304 cpu']:.1f}x cheaper in server CPU than that"
            )
            if "before" in results:
                old = results["before"]
                print(
                    f"{what}: cold full read (no cache) {old[f'{what} full']:.0f} -> "
                    f"{cold[f'{what} full']:.0f} req/s "
                    f"({cold[f'{what} full'] / old[f'{what} full']:.2f}x); server CPU "
                    f"{old[f'{what} full cpu']:.2f} -> {cold[f'{what} full cpu']:.2f} ms "
                    f"({old[f'{what} full cpu'] / cold[f'{what} full cpu']:.2f}x)"
                )
                print(
                    f"{what}: full read {old[f'{what} full']:.0f} -> {new[f'{what} full']:.0f} req/s "
                    f"({new[f'{what} full'] / old[f'{what} full']:.2f}x, goal >= 3x); server CPU per full "
                    f"read {old[f'{what} full cpu']:.2f} -> {new[f'{what} full cpu']:.2f} ms "
                    f"({old[f'{what} full cpu'] / new[f'{what} full cpu']:.2f}x); 304 "
                    f"{old[f'{what} 304']:.0f} -> {new[f'{what} 304']:.0f} req/s, "
                    f"{old[f'{what} 304 cpu']:.2f} -> {new[f'{what} 304 cpu']:.2f} ms CPU"
                )
        print(f"load average {os.getloadavg()[0]:.2f} at the end")
    finally:
        import redis

        redis.Redis.from_url(REDIS_URL).delete(queue)
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--submissions", type=int, default=1000)
    ap.add_argument("--max-seconds", type=float, default=120)
    ap.add_argument("--poll-seconds", type=float, default=15, help="duration of the open-loop poller runs")
    ap.add_argument("--submit-clients", type=int, default=64, help="concurrent single-candidate POSTs")
    ap.add_argument("--batch", type=int, default=500, help="candidates in the one-POST batch (0: skip)")
    ap.add_argument("--load", type=int, default=0, help="busy-loop processes running throughout")
    ap.add_argument("--intake-only", action="store_true", help="submissions and batch only, no GET runs")
    ap.add_argument("--reads", action="store_true", help="the read path only (see above)")
    ap.add_argument("--before", type=Path, help="with --reads: an earlier commit's source tree to compare")
    ap.add_argument("--candidates", type=int, default=50, help="with --reads: candidates in the study")
    ap.add_argument("--epochs", type=int, default=20, help="with --reads: curve points per run")
    ap.add_argument(
        "--read-seconds", type=float, default=10, help="with --reads: seconds per closed-loop run"
    )
    ap.add_argument("--httpx", action="store_true", help="with --reads: the Python client, even with wrk")
    args = ap.parse_args()
    if args.reads:
        reads_main(args)
        return
    load = start_load(args.load)
    if args.load:
        print(f"host loaded with {args.load} busy-loop processes ({os.cpu_count()} cores)")

    name = f"archscreen_bench_{uuid.uuid4().hex[:8]}"
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db_url = f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{name}"
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "ARCHSCREEN_DATABASE_URL": db_url,
        "ARCHSCREEN_BROKER_URL": REDIS_URL,
        "ARCHSCREEN_QUEUE": queue,
        "ARCHSCREEN_DATA_DIR": f"/tmp/{name}",
    }
    cli = [sys.executable, "-m", "archscreen"]
    api = None
    try:
        subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True)
        token = (
            subprocess.run(
                [*cli, "token", "create", "--tenant", "bench"],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        api = subprocess.Popen([*cli, "api", "--port", str(port), "--log-level", "warning"], env=env)
        for _ in range(200):
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        headers = {"Authorization": f"Bearer {token}"}
        study = httpx.post(
            f"{url}/api/v1/studies", headers=headers, json={"name": "bench", "dataset": "mnist1d"}, timeout=60
        ).json()
        accept_s, accept_lat = asyncio.run(
            submit(url, headers, study["id"], args.submissions, args.submit_clients)
        )
        sub_ms = [x * 1000 for x in accept_lat]
        print(
            f"accepted {args.submissions} candidate submissions in {accept_s:.2f} s "
            f"({args.submissions / accept_s:.0f}/s, {args.submit_clients} concurrent clients; "
            f"p50 {pct(sub_ms, 50):.0f} ms, p99 {pct(sub_ms, 99):.0f} ms; target < 10 s)"
        )
        if args.batch:
            batch_s, stall = asyncio.run(
                batch_while_polling(url, headers, study["id"], args.batch, args.submissions)
            )
            print(
                f"one POST of {args.batch} candidates: {batch_s:.2f} s; "
                f"worst /healthz during it: {stall * 1000:.0f} ms"
            )
        if args.intake_only:
            print(f"accept_1000_s: {accept_s * 1000 / args.submissions:.2f}")
            return
        cands = httpx.get(f"{url}/api/v1/studies/{study['id']}/candidates?limit=500", headers=headers).json()
        ids = [c["id"] for c in cands["data"]]
        paths = [f"/api/v1/candidates/{ids[i % len(ids)]}" for i in range(args.requests)]
        asyncio.run(hammer(url, headers, paths[:200], args.clients, 30))  # warm-up
        base = asyncio.run(hammer(url, headers, ["/healthz"] * args.requests, args.clients, args.max_seconds))
        lat = asyncio.run(hammer(url, headers, paths, args.clients, args.max_seconds))
        ms = [x * 1000 for x in lat]
        bms = [x * 1000 for x in base]
        print(
            f"GET /healthz (baseline, no database): n={len(bms)} "
            f"p50 {pct(bms, 50):.1f} ms, p99 {pct(bms, 99):.1f} ms"
        )
        print(
            f"GET /api/v1/candidates/{{id}}: n={len(ms)} at {args.clients} clients: "
            f"p50 {pct(ms, 50):.1f} ms, p99 {pct(ms, 99):.1f} ms, mean {statistics.fmean(ms):.1f} ms, "
            f"{len(ms) / sum(lat) * args.clients:.0f} req/s"
        )
        print(f"ratio p99 candidate / p99 healthz: {pct(ms, 99) / pct(bms, 99):.2f}")
        # the 304 path: the same candidates, each polled with the ETag the poller already holds
        etags = {
            i: httpx.get(f"{url}/api/v1/candidates/{i}", headers=headers).headers["ETag"] for i in ids[:50]
        }
        one = ids[0]
        cached = asyncio.run(
            hammer(
                url,
                {**headers, "If-None-Match": etags[one]},
                [f"/api/v1/candidates/{one}"] * args.requests,
                args.clients,
                args.max_seconds,
                expect=304,
            )
        )
        cms = [x * 1000 for x in cached]
        print(
            f"GET /api/v1/candidates/{{id}} answered 304: n={len(cms)} at {args.clients} clients: "
            f"p50 {pct(cms, 50):.1f} ms, p99 {pct(cms, 99):.1f} ms "
            f"({len(cms) / sum(cached) * args.clients:.0f} req/s)"
        )
        print(f"ratio p99 304 / p99 full read: {pct(cms, 99) / pct(ms, 99):.2f}")
        # open loop: 64 dashboards each polling once per second
        poll_paths = [f"/api/v1/candidates/{i}" for i in ids[: args.clients]]
        poll_etags = {p: httpx.get(url + p, headers=headers).headers["ETag"] for p in poll_paths}
        for label, tags in (("full read", None), ("304", poll_etags)):
            lat_p = asyncio.run(pollers(url, headers, poll_paths, args.clients, 1.0, args.poll_seconds, tags))
            pms = [x * 1000 for x in lat_p]
            print(
                f"open loop, {args.clients} pollers at 1 req/s each, {label}: n={len(pms)} "
                f"p50 {pct(pms, 50):.1f} ms, p99 {pct(pms, 99):.1f} ms"
            )
        wrk_p99 = run_wrk(url, token, one, args.clients)
        wrk_304 = run_wrk(url, token, one, args.clients, etag=etags[one])
        if wrk_p99 is not None and wrk_304 is not None:
            print(f"wrk ratio p99 304 / p99 full read: {wrk_304 / wrk_p99:.2f}")
            ms = [wrk_p99]
        print(f"accept_1000_s: {accept_s * 1000 / args.submissions:.2f}")
        print(f"api_p99_ms: {pct(ms, 99):.1f}")
    finally:
        for proc in load:
            proc.kill()
        if api is not None:
            api.terminate()
            api.wait(30)
        import redis

        redis.Redis.from_url(REDIS_URL).delete(queue)
        with _pg_admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()

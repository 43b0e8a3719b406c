"""Service commands: ``up`` (embedded, one command), ``api``, ``worker``, ``migrate``, ``token create``.

All read the same :class:`~archscreen.settings.Settings` (``--data-dir`` overrides
``ARCHSCREEN_DATA_DIR``); production sets ``ARCHSCREEN_DATABASE_URL`` and
``ARCHSCREEN_BROKER_URL``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from archscreen.cli_common import EXIT_OK, EXIT_USAGE, CliError, positive_int

LOCAL_TENANT = "local"
JOBS_PER_GPU_MAX = 64  # = worker.gpu_share.JOBS_PER_GPU_MAX (not imported: it imports torch)


def jobs_per_gpu_arg(text: str) -> int:
    """``--jobs-per-gpu``: an integer from 1 to 64 (more processes than that only share launch
    queues and CUDA contexts on one device; each context alone costs some hundreds of MiB)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected an integer from 1 to {JOBS_PER_GPU_MAX}, got {text!r}"
        ) from None
    if not 1 <= value <= JOBS_PER_GPU_MAX:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to {JOBS_PER_GPU_MAX}, got {value}")
    return value


def _settings(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from archscreen.settings import Settings

    overrides: dict[str, Any] = {}
    if getattr(args, "data_dir", None):
        overrides["data_dir"] = Path(args.data_dir).resolve()
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise CliError(f"invalid setting ARCHSCREEN_{str(first['loc'][0]).upper()}: {first['msg']}") from None


def _database(settings: Any, *, migrate: bool = False) -> Any:
    from sqlalchemy.exc import ArgumentError, OperationalError

    from archscreen.store import Database

    settings.ensure_dirs()
    try:
        db = Database(settings.resolved_database_url)
    except ArgumentError as exc:
        raise CliError(f"invalid database URL {settings.resolved_database_url!r}: {exc}") from None
    try:
        if migrate:
            db.migrate()
        else:
            db.ping()
    except OperationalError as exc:
        raise CliError(
            f"cannot reach the database {_redact(settings.resolved_database_url)}: "
            + " ".join(str(exc.orig).split())  # driver messages span lines; ours is one
        ) from None
    return db


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _data_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="embedded state (SQLite, broker, artifacts); env ARCHSCREEN_DATA_DIR",
    )


def add_service_commands(sub: Any) -> None:
    p = sub.add_parser(
        "up",
        help="run the whole service locally: database, API and worker processes, one command",
        description="Create/migrate the database, start the API and N Celery worker processes "
        "(embedded SQLite + a broker that needs no server unless ARCHSCREEN_DATABASE_URL/"
        "ARCHSCREEN_BROKER_URL are set), print the URL and an API token; Ctrl-C stops everything.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    _data_dir_arg(p)
    p.add_argument(
        "--workers",
        type=positive_int,
        default=max(1, min(4, (os.cpu_count() or 2) // 2)),
        help="concurrent training jobs (worker processes)",
    )
    p.add_argument(
        "--demo", action="store_true", help="also submit a small example study (3 specs on mnist1d)"
    )
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("api", help="run the REST API (uvicorn); refuses to start on an old schema")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    _data_dir_arg(p)
    p.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="uvicorn worker processes (default ARCHSCREEN_API_WORKERS or 1)",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_api)

    _add_worker_parser(sub)

    p = sub.add_parser("migrate", help="apply database migrations (Alembic) up to the code's schema")
    _data_dir_arg(p)
    p.add_argument("--revision", default="head", help="target revision (default head)")
    p.add_argument("--downgrade", metavar="REV", help="downgrade to REV instead (e.g. base)")
    p.set_defaults(func=cmd_migrate)

    _add_token_parsers(sub)


def _add_worker_parser(sub: Any) -> None:
    p = sub.add_parser(
        "worker",
        help="run Celery worker processes that train queued jobs",
        description="Train queued jobs, each in a fresh process. With GPUs (--gpus, or all visible "
        "ones by default) one worker per GPU, pinned with CUDA_VISIBLE_DEVICES, runs --jobs-per-gpu "
        "jobs at once; on the CPU (--cpu, or no GPU visible) --concurrency jobs at once. "
        "--jobs-per-gpu is for GPUs only: with --cpu or without a visible GPU it is an error (use "
        "--concurrency K there). ARCHSCREEN_DEVICE=cpu with --gpus rehearses the GPU layout on the "
        "CPU (same processes and shares, nothing capped).",
    )
    _data_dir_arg(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "--gpus", metavar="IDS", help="comma-separated GPU ids: one worker process per GPU, pinned"
    )
    g.add_argument("--cpu", action="store_true", help="train on the CPU even if GPUs are visible")
    p.add_argument(
        "--concurrency", type=positive_int, default=None, help="jobs at once (CPU workers; default 1)"
    )
    p.add_argument(
        "--jobs-per-gpu",
        type=jobs_per_gpu_arg,
        default=None,
        metavar="K",
        help=f"job processes sharing each GPU (1-{JOBS_PER_GPU_MAX}; default ARCHSCREEN_JOBS_PER_GPU or 1): "
        "each caps its CUDA memory at ARCHSCREEN_GPU_MEMORY_SAFETY/K (0.95/K) of the GPU; a job that "
        "does not fit fails with 'job needs more than the 1/K share of GPU n' and its neighbours "
        "train on. GPUs only: on the CPU use --concurrency",
    )
    p.add_argument("--hostname", default=None, help="Celery node name (default archscreen-<kind>@<host>)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--pinned-gpu", help=argparse.SUPPRESS)  # set by the --gpus supervisor for its children
    p.set_defaults(func=cmd_worker)


def _add_token_parsers(sub: Any) -> None:
    p = sub.add_parser("token", help="manage API tokens")
    tsub = p.add_subparsers(dest="token_command", metavar="ACTION", required=True, parser_class=type(p))
    t = tsub.add_parser("create", help="create a token for a tenant (printed on the last line)")
    t.add_argument("--tenant", required=True, help="tenant name (created if new)")
    t.add_argument("--name", default="", help="a label for the token")
    _data_dir_arg(t)
    t.set_defaults(func=cmd_token_create)
    t = tsub.add_parser(
        "list", help="list tokens (id, tenant, prefix, name, created, revoked); never the token itself"
    )
    t.add_argument("--tenant", help="only this tenant's tokens")
    t.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    _data_dir_arg(t)
    t.set_defaults(func=cmd_token_list)
    t = tsub.add_parser("revoke", help="revoke a token by id or by its prefix (from `token list`)")
    t.add_argument("token", metavar="ID_OR_PREFIX", help="a token id, or the prefix `token list` shows")
    _data_dir_arg(t)
    t.set_defaults(func=cmd_token_revoke)


# ------------------------------------------------------------------------------ migrate / token


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    db = _database(settings)
    from alembic.util.exc import CommandError

    before = db.current_revision()
    try:
        if args.downgrade:
            db.downgrade(args.downgrade)
        else:
            db.migrate(args.revision)
    except CommandError as exc:
        raise CliError(" ".join(str(exc).split())) from None
    print(f"database {_redact(settings.resolved_database_url)}: revision {before} -> {db.current_revision()}")
    return EXIT_OK


def cmd_token_create(args: argparse.Namespace) -> int:
    from archscreen.store import SchemaOutOfDate
    from archscreen.store.auth import create_token

    settings = _settings(args)
    db = _database(settings)
    try:
        db.check_schema()
    except SchemaOutOfDate as exc:
        raise CliError(str(exc)) from None
    with db.session() as s:
        token = create_token(s, args.tenant, args.name)
    print(f"token for tenant {args.tenant!r} (shown once; store it safely):", file=sys.stderr)
    print(token)
    return EXIT_OK


def _migrated_database(args: argparse.Namespace) -> Any:
    from archscreen.store import SchemaOutOfDate

    db = _database(_settings(args))
    try:
        db.check_schema()
    except SchemaOutOfDate as exc:
        raise CliError(str(exc)) from None
    return db


def cmd_token_list(args: argparse.Namespace) -> int:
    from archscreen.store.auth import list_tokens

    with _migrated_database(args).session() as s:
        tokens = list_tokens(s, tenant=args.tenant)
    if args.json:
        print(json.dumps([t.as_dict() for t in tokens], indent=2))
        return EXIT_OK
    if not tokens:
        print("no tokens" + (f" for tenant {args.tenant!r}" if args.tenant else ""))
        return EXIT_OK
    print(f"{'id':>4}  {'tenant':<16} {'prefix':<10} {'name':<20} {'created (UTC)':<19}  revoked (UTC)")
    for t in tokens:
        revoked = t.revoked_at.strftime("%Y-%m-%d %H:%M:%S") if t.revoked_at else "-"
        print(
            f"{t.id:>4}  {t.tenant:<16.16} {t.prefix:<10} {t.name:<20.20} "
            f"{t.created_at:%Y-%m-%d %H:%M:%S}  {revoked}"
        )
    return EXIT_OK


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from archscreen.store.auth import TokenNotFound, revoke_token

    try:
        with _migrated_database(args).session() as s:
            token = revoke_token(s, args.token)
    except TokenNotFound as exc:
        raise CliError(str(exc)) from None
    print(
        f"revoked token {token.id} ({token.prefix}…, tenant {token.tenant!r}); running API processes "
        "stop accepting it within ARCHSCREEN_AUTH_CACHE_S"
    )
    return EXIT_OK


def local_token(db: Any, settings: Any) -> str:
    """The embedded service's token for tenant ``local``, kept in ``data_dir/api-token`` (mode 600)."""
    from archscreen.store.auth import create_token, tenant_for_token

    path = settings.data_dir / "api-token"
    if path.exists():
        token = path.read_text().strip()
        with db.session() as s:
            if tenant_for_token(s, token) is not None:
                return token
    with db.session() as s:
        token = create_token(s, LOCAL_TENANT, "archscreen up")
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return token


# ------------------------------------------------------------------------------ api


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise CliError(
                f"cannot listen on {host}:{port}: {exc.strerror} (choose another --port)"
            ) from None


def _app(settings: Any) -> Any:
    from archscreen.api.app import create_app
    from archscreen.store import SchemaOutOfDate

    try:
        return create_app(settings)
    except SchemaOutOfDate as exc:
        raise CliError(str(exc)) from None


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings(args)
    _database(settings)
    app = _app(settings)
    _check_port(args.host, args.port)
    if settings.metrics_port is not None:
        from prometheus_client import start_http_server

        _check_port(settings.metrics_host, settings.metrics_port)
        # its own listener, so the public port never shows every tenant's job counts; with several
        # API workers it reports the job gauges (read from the database) but not request latency
        start_http_server(
            settings.metrics_port, addr=settings.metrics_host, registry=app.state.metrics_registry
        )
    workers = args.workers or settings.api_workers
    if workers == 1:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
        return EXIT_OK
    # several processes: each builds the app from the environment (hand it --data-dir)
    os.environ["ARCHSCREEN_DATA_DIR"] = str(settings.data_dir)
    uvicorn.run(
        "archscreen.api.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        workers=workers,
        log_level=args.log_level,
        access_log=False,
    )
    return EXIT_OK


# ------------------------------------------------------------------------------ worker


def _visible_gpus(*, all_devices: bool = False) -> list[str]:
    """GPU ids, asked in a throwaway process so CUDA is never initialised in this (forking) one.

    ``all_devices``: every GPU of the machine, not only those this process's CUDA_VISIBLE_DEVICES
    shows (``--gpus`` ids are the machine's: each child gets CUDA_VISIBLE_DEVICES=<id>).
    """
    env = {k: v for k, v in os.environ.items() if not (all_devices and k == "CUDA_VISIBLE_DEVICES")}
    try:
        out = subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
            env=env,
        ).stdout.strip()
        return [str(i) for i in range(int(out or 0))]
    except (subprocess.SubprocessError, ValueError):
        return []


def _gpu_ids(text: str) -> list[str]:
    """``--gpus 0,1``: ids as CUDA_VISIBLE_DEVICES takes them (indices, or GPU-/MIG- UUIDs), no repeats."""
    ids = [g.strip() for g in text.split(",")]
    if not all(ids):
        raise CliError(f"--gpus {text!r}: expected comma-separated GPU ids such as 0,1", EXIT_USAGE)
    for gpu in ids:
        if not (gpu.isdigit() or gpu.startswith(("GPU-", "MIG-"))):
            raise CliError(
                f"--gpus: {gpu!r} is not a GPU id (an index such as 0, or a GPU-/MIG- UUID)", EXIT_USAGE
            )
    repeated = sorted({g for g in ids if ids.count(g) > 1})
    if repeated:
        raise CliError(
            f"--gpus: GPU {', '.join(repeated)} listed twice; to run several jobs on one GPU use "
            "--jobs-per-gpu K",
            EXIT_USAGE,
        )
    return ids


def _check_gpus_visible(gpus: list[str]) -> None:
    """The listed GPUs exist (asked in a throwaway process that sees every GPU of the machine)."""
    visible = _visible_gpus(all_devices=True)
    if not visible:
        raise CliError(
            f"--gpus {','.join(gpus)}: no CUDA device is visible on this machine; to train on the "
            "CPU use --cpu --concurrency K (or ARCHSCREEN_DEVICE=cpu to rehearse the GPU layout)"
        )
    missing = [g for g in gpus if g.isdigit() and g not in visible]
    if missing:
        raise CliError(
            f"--gpus: GPU {', '.join(missing)} not found (this machine has GPUs 0-{len(visible) - 1})"
        )


def cmd_worker(args: argparse.Namespace) -> int:
    from archscreen.store import SchemaOutOfDate

    # arguments first: a wrong combination is a usage error, whatever the database's state
    if args.jobs_per_gpu is not None and args.cpu:
        raise CliError(
            "--jobs-per-gpu shares a GPU between jobs; with --cpu use --concurrency K for K jobs at once",
            EXIT_USAGE,
        )
    if args.jobs_per_gpu is not None and args.concurrency is not None and args.pinned_gpu is None:
        raise CliError(
            "--concurrency is for CPU workers and --jobs-per-gpu for GPU workers; give one of them",
            EXIT_USAGE,
        )
    gpus = _gpu_ids(args.gpus) if args.gpus else None
    settings = _settings(args)
    try:
        _database(settings).check_schema()
    except SchemaOutOfDate as exc:
        raise CliError(str(exc)) from None
    jobs_per_gpu = args.jobs_per_gpu or settings.jobs_per_gpu
    if args.pinned_gpu is not None:
        # ARCHSCREEN_DEVICE=cpu: a rehearsal of the GPU layout on the CPU (worker/gpu_share.py)
        device = "cpu" if settings.device == "cpu" else "cuda"
        return _run_celery_worker(
            args, settings, device=device, concurrency=jobs_per_gpu, pinned=(args.pinned_gpu, jobs_per_gpu)
        )
    if args.cpu:
        return _run_celery_worker(args, settings, device="cpu", concurrency=args.concurrency or 1)
    if gpus is not None:
        if settings.device != "cpu":
            _check_gpus_visible(gpus)
        else:
            print(
                f"ARCHSCREEN_DEVICE=cpu: rehearsing the --gpus layout on the CPU ({len(gpus)} worker(s), "
                f"{jobs_per_gpu} job process(es) each; no memory cap applied)",
                file=sys.stderr,
                flush=True,
            )
        return _supervise_gpu_workers(args, gpus, jobs_per_gpu)
    visible = _visible_gpus() if settings.device != "cpu" else []
    if not visible:
        if args.jobs_per_gpu is not None:
            why = "ARCHSCREEN_DEVICE=cpu" if settings.device == "cpu" else "torch.cuda.device_count() is 0"
            raise CliError(
                f"--jobs-per-gpu {args.jobs_per_gpu}: no CUDA device is visible ({why}); "
                "on the CPU use --concurrency K for K jobs at once",
                EXIT_USAGE,
            )
        return _run_celery_worker(args, settings, device="cpu", concurrency=args.concurrency or 1)
    return _supervise_gpu_workers(args, visible, jobs_per_gpu)


def _run_celery_worker(
    args: argparse.Namespace,
    settings: Any,
    *,
    device: str,
    concurrency: int,
    pinned: tuple[str, int] | None = None,
) -> int:
    """``pinned``: (GPU id, K) of a ``--gpus`` child: its K job processes share that GPU."""
    # handed to the worker explicitly; its job processes fork from this one and inherit them
    from archscreen.worker import gpu_share, tasks

    update: dict[str, Any] = {"device": device}
    if pinned is not None:  # each job process caps its GPU memory at its share (worker/gpu_share.py)
        update["jobs_per_gpu"] = pinned[1]
    gpu_share.pin(pinned[0] if pinned is not None else None)
    tasks.use_settings(settings.model_copy(update=update), concurrency=concurrency)
    app = tasks.app

    if os.environ.get("ARCHSCREEN_PARENT_PID"):
        # started by `archscreen up` (a laptop or a container, often as root): Celery's warning
        # about running as root is noise there; a production `archscreen worker` keeps it
        import warnings

        from celery.exceptions import SecurityWarning

        warnings.filterwarnings("ignore", category=SecurityWarning)

    kind = "gpu" + pinned[0] if pinned is not None else "gpu" if device == "cuda" else "cpu"
    hostname = args.hostname or f"archscreen-{kind}-{os.getpid()}@{socket.gethostname()}"
    argv = [
        "worker",
        f"--loglevel={args.log_level.upper()}",
        f"--concurrency={concurrency}",
        "--pool=prefork",  # the app's worker_pool refines it (worker/pool.py)
        f"--queues={settings.queue}",
        f"--hostname={hostname}",
        "--without-mingle",
        "--without-gossip",
    ]
    if os.environ.get("ARCHSCREEN_PARENT_PID"):
        argv.insert(0, "--quiet")  # no banner inside `archscreen up`'s output
    app.worker_main(argv)
    return EXIT_OK


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """Have the kernel send ``sig`` to this process when its parent dies (Linux; elsewhere nothing).

    For processes that ``up`` and the ``--gpus`` supervisor start: killed hard, they take their
    workers with them (a worker's SIGTERM checkpoints and requeues its jobs), instead of leaving
    them training with no one to stop them. Runs between fork and exec (``preexec_fn``).
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        return


def _supervise_gpu_workers(args: argparse.Namespace, gpus: list[str], jobs_per_gpu: int = 1) -> int:
    """One worker process per GPU, each seeing only its GPU (``CUDA_VISIBLE_DEVICES``) and running
    ``jobs_per_gpu`` job processes at once on it (worker/gpu_share.py caps each one's memory)."""
    children = []
    for gpu in gpus:
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
        cmd = [
            sys.executable,
            "-m",
            "archscreen",
            "worker",
            "--pinned-gpu",
            gpu,
            "--jobs-per-gpu",
            str(jobs_per_gpu),
            "--log-level",
            args.log_level,
        ]
        cmd += ["--hostname", f"archscreen-gpu{gpu}-{os.getpid()}@{socket.gethostname()}"]
        if args.data_dir:
            cmd += ["--data-dir", args.data_dir]
        children.append(subprocess.Popen(cmd, env=env, preexec_fn=die_with_parent))
    return _wait_children(children)


def _wait_children(children: list[subprocess.Popen[Any]]) -> int:
    def forward(signum: int, _frame: Any) -> None:
        for c in children:
            if c.poll() is None:
                c.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [c.wait() for c in children]
    return max(codes, default=0)


# ------------------------------------------------------------------------------ up


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, by psutil (as fast as the /proc scan it
    replaced: 1.5 ms against 1.7 ms for 100 processes, and not Linux-only)."""
    import psutil

    members = []
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                members.append(proc.pid)
        except (OSError, psutil.Error):  # ended meanwhile, or not ours to look at
            continue
    return members


def _stop(proc: subprocess.Popen[Any], grace_s: float = 10.0) -> None:
    """SIGTERM (Celery's warm shutdown), then SIGQUIT (cold), then SIGKILL, until the whole group is gone.

    The worker runs in its own process group (session), so its pool children are stopped too,
    not only the main process.
    """
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None and not group_members(proc.pid):
            return
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc.poll() is not None and not group_members(proc.pid):
                return
            time.sleep(0.1)


UP_LOCK_FILE = "up.lock"


def lock_data_dir(data_dir: Path) -> Any:
    """Hold an exclusive ``flock`` on ``data_dir/up.lock`` for this process's life (the open file
    is returned; the kernel releases the lock when the process ends, however it ends).

    Two ``up`` on one data directory would share its SQLite file and broker folder and each requeue
    the other's running jobs on start: the second is refused with the holder's pid, which the file
    holds. Its worker does not inherit the lock (``Popen`` closes inherited descriptors).
    """
    import fcntl

    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / UP_LOCK_FILE
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise CliError(
            f"another `archscreen up` (pid {holder}) is using the data directory {data_dir}: "
            "stop it first, or give this one another --data-dir"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def cmd_up(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings(args)
    lock = lock_data_dir(settings.data_dir)  # held until this process exits
    db = _database(settings, migrate=True)
    token = local_token(db, settings)
    app = _app(settings)
    _check_port(args.host, args.port)

    env = {
        **os.environ,
        "ARCHSCREEN_DATA_DIR": str(settings.data_dir),
        "ARCHSCREEN_PARENT_PID": str(os.getpid()),
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "archscreen",
            "worker",
            "--concurrency",
            str(args.workers),
            "--log-level",
            "warning",
        ],
        env=env,
        start_new_session=True,  # Ctrl-C reaches us only; we stop the worker in order
        preexec_fn=die_with_parent,  # killed hard, we still stop it (SIGTERM: jobs are requeued)
    )
    url = f"http://{args.host}:{args.port}"
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)

    def announce() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.05)
        print(f"archscreen is up: dashboard {url}/  (API {url}/api/v1, docs {url}/docs)", flush=True)
        print(f"data: {settings.data_dir}   workers: {args.workers}   press Ctrl-C to stop", flush=True)
        print(f"API token (tenant {LOCAL_TENANT!r}): {token}", flush=True)
        if args.demo:
            try:
                from archscreen.demo import submit_demo

                submit_demo(url, token)
            except Exception as exc:
                print(f"demo: could not submit the example study: {exc}", file=sys.stderr, flush=True)

    threading.Thread(target=announce, daemon=True).start()
    # uvicorn re-raises the signal that stopped it once it has shut down; with the default
    # SIGTERM action that would kill this process before it stops the workers.
    signal.signal(signal.SIGTERM, lambda *_: None)
    signal.signal(signal.SIGINT, lambda *_: None)  # Ctrl-C is the normal way to stop: exit 0
    try:
        server.run()
    finally:
        print("stopping workers ...", file=sys.stderr, flush=True)
        # SIGTERM: each job stops at its next epoch boundary (at most shutdown_grace_s), writes its
        # checkpoint and is requeued; then the worker exits
        _stop(worker, grace_s=settings.shutdown_grace_s + 30)
        db.dispose()
        lock.close()
    return EXIT_OK

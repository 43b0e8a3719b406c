"""The service commands as a user runs them: `up --demo`, `token create`, `migrate`, `api` (old schema)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from archscreen.config import PromotionPolicy, ScreeningConfig
from archscreen.store import Database
from tests.services import free_port

pytestmark = pytest.mark.slow


def run_cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHSCREEN_")}
    return subprocess.run(
        [sys.executable, "-m", "archscreen", *args, "--data-dir", str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def process_group_alive(pgid: int) -> bool:
    from archscreen.service_cli import group_members

    return bool(group_members(pgid))


def test_up_demo_screens_ranks_promotes_and_ctrl_c_stops_every_child(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHSCREEN_")}
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "archscreen",
            "up",
            "--demo",
            "--port",
            str(port),
            "--workers",
            "2",
            "--data-dir",
            str(tmp_path),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    try:
        assert up.stdout is not None
        while not any(line.startswith("API token") for line in lines):
            line = up.stdout.readline()
            assert line, "up exited before printing its token:\n" + "".join(lines)
            lines.append(line)
        token = lines[-1].rsplit(" ", 1)[-1].strip()
        assert f"http://127.0.0.1:{port}" in "".join(lines)
        headers = {"Authorization": f"Bearer {token}"}
        base = f"http://127.0.0.1:{port}/api/v1"
        # tuning jobs per promoted candidate under the default policy: one per start (multi), one
        # from the screening's weights (screen-weights, core/defaults.py TUNING), or one halving job
        policy = PromotionPolicy()
        per = policy.starts if policy.tuning_start == "multi" and not policy.halving else 1
        done = 3 + 2 * per
        # the demo screens under the default budget (30 epochs, patience 10: core/defaults.py)
        deadline = time.monotonic() + 360 + 60 * per
        jobs: dict[str, int] = {}
        while time.monotonic() < deadline:
            studies = httpx.get(f"{base}/studies", headers=headers).json()["data"]
            jobs = studies[0]["jobs_by_state"] if studies else {}
            # 3 screening runs and the auto-promoted top 2's tuning jobs, one per start
            if studies and studies[0]["auto_promoted"] and jobs == {"succeeded": done}:
                break
            time.sleep(0.5)
        assert jobs == {"succeeded": done}, jobs
        # the demo screens under the service's defaults (core/defaults.py), what a user gets
        default = ScreeningConfig().for_dataset(studies[0]["dataset"], None)  # "auto": its measured cap
        assert studies[0]["screening"] == default.model_dump(mode="json")
        png = tmp_path / "demo.png"
        plot = subprocess.run(
            [
                sys.executable,
                "-m",
                "archscreen",
                "plot",
                "demo",
                "-o",
                str(png),
                "--server",
                f"http://127.0.0.1:{port}",
                "--token",
                token,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert plot.returncode == 0, plot.stderr
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
        status = subprocess.run(
            [
                sys.executable,
                "-m",
                "archscreen",
                "status",
                "demo",
                "--server",
                f"http://127.0.0.1:{port}",
                "--token",
                token,
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert status.returncode == 0 and "best:" in status.stdout and "learning rate" in status.stdout
        # each tuned candidate's line names the start that answers for it: under the default tuning
        # stage (screen-weights) its one job; under multi, its best start by validation
        label = {"multi": "p", "posterior-width": "p"}.get(policy.tuning_start, policy.tuning_start)
        if policy.halving:
            label = "screen-weights+halving" if policy.tuning_start == "screen-weights" else "halving"
        assert status.stdout.count(f"(start {label}") == 2, status.stdout
        db = Database(f"sqlite:///{tmp_path / 'archscreen.db'}")
        with db.engine.connect() as conn:
            worker_pids = [row[0] for row in conn.exec_driver_sql("SELECT pid FROM workers")]
        db.dispose()
        assert worker_pids
    finally:
        up.send_signal(signal.SIGINT)  # what Ctrl-C does
        code = up.wait(60)
    assert code == 0
    assert not any(process_group_alive(pid) for pid in worker_pids)  # the worker and its children are gone
    # a second `up` on the same data dir reuses the database and the token
    again = run_cli("token", "create", "--tenant", "local", data_dir=tmp_path)
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1].startswith("as_")
    assert (tmp_path / "api-token").read_text().strip() == token
    assert oct((tmp_path / "api-token").stat().st_mode & 0o777) == "0o600"


def test_token_migrate_and_api_refusing_an_old_schema(tmp_path: Path) -> None:
    before = run_cli("token", "create", "--tenant", "acme", data_dir=tmp_path)
    assert before.returncode == 1
    assert (
        before.stderr.strip().splitlines() == [before.stderr.strip()]
        and "run `archscreen migrate`" in before.stderr
    )
    from archscreen.store import Database

    head = Database(f"sqlite:///{tmp_path / 'unused.db'}").head_revision()  # the code's schema
    migrated = run_cli("migrate", data_dir=tmp_path)
    assert migrated.returncode == 0 and f"revision None -> {head}" in migrated.stdout
    token = run_cli("token", "create", "--tenant", "acme", data_dir=tmp_path)
    assert token.returncode == 0 and token.stdout.strip().splitlines()[-1].startswith("as_")
    down = run_cli("migrate", "--downgrade", "base", data_dir=tmp_path)
    assert down.returncode == 0 and f"{head} -> None" in down.stdout
    api = run_cli("api", "--port", str(free_port()), data_dir=tmp_path)
    assert api.returncode == 1
    assert len(api.stderr.strip().splitlines()) == 1 and "run `archscreen migrate`" in api.stderr
    bad_db = subprocess.run(
        [sys.executable, "-m", "archscreen", "migrate"],
        env={**os.environ, "ARCHSCREEN_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad_db.returncode == 1 and len(bad_db.stderr.strip().splitlines()) == 1
    bad_rev = run_cli("migrate", "--revision", "nope", data_dir=tmp_path)
    assert (
        bad_rev.returncode == 1 and len(bad_rev.stderr.strip().splitlines()) == 1 and "nope" in bad_rev.stderr
    )
    bad_url = subprocess.run(
        [sys.executable, "-m", "archscreen", "migrate"],
        env={**os.environ, "ARCHSCREEN_DATABASE_URL": "postgres://nobody@127.0.0.1/none"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad_url.returncode == 1 and "invalid database URL" in bad_url.stderr
    assert len(bad_url.stderr.strip().splitlines()) == 1
    assert "cannot reach the database" in bad_db.stderr and "Traceback" not in bad_db.stderr


def test_a_second_up_on_one_data_directory_is_refused_naming_the_first(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHSCREEN_")}

    def up_argv() -> list[str]:
        # each on a port of its own: only the data directory is shared
        return [sys.executable, "-m", "archscreen", "up", "--port", str(free_port()), "--workers", "1"]

    first = subprocess.Popen(
        [*up_argv(), "--data-dir", str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert first.stdout is not None
        lines: list[str] = []
        while not any(line.startswith("API token") for line in lines):
            line = first.stdout.readline()
            assert line, "the first up exited:\n" + "".join(lines)
            lines.append(line)
        second = run_cli(*up_argv()[3:], data_dir=tmp_path)
        assert second.returncode == 1, second.stdout + second.stderr
        message = second.stderr.strip()
        assert len(message.splitlines()) == 1, message
        assert f"pid {first.pid}" in message and str(tmp_path) in message, message
        assert first.poll() is None, "the first up keeps running"
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(60)

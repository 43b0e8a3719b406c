"""The production deployment files, checked statically: no Docker engine runs in CI.

docker-compose.yml must parse, wire the services in the right order (migrate completes before
api and worker start), share the artifacts volume, and call CLI subcommands that exist. The
Dockerfile must be multi-stage, run as a non-root user, pin torch and run ``archscreen``.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ARTIFACTS_MOUNT = "/var/lib/archscreen/artifacts"


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


def services() -> dict[str, dict[str, Any]]:
    found = compose().get("services")
    assert isinstance(found, dict), "docker-compose.yml has no services mapping"
    return found


def built_services() -> list[str]:
    return sorted(name for name, svc in services().items() if "build" in svc)


def as_list(command: Any) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def cli_help(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # cwd outside the repo, so the installed package answers, not the source folder.
    return subprocess.run(
        [sys.executable, "-m", "archscreen", *args, "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )


def named_volume_targets(svc: dict[str, Any]) -> dict[str, str]:
    """target path → named volume, for the short (``name:/path``) and the long syntax."""
    targets = {}
    for vol in svc.get("volumes", []):
        if isinstance(vol, str):
            source, _, rest = vol.partition(":")
            target = rest.split(":", 1)[0]
        else:
            source, target = vol.get("source", ""), vol.get("target", "")
        if source and not source.startswith((".", "/", "~")):
            targets[target] = source
    return targets


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, rest = stripped.partition(" ")
        out.append((keyword.upper(), rest.strip()))
    return out


def test_compose_has_the_services() -> None:
    assert {"api", "worker", "postgres", "redis", "migrate"} <= set(services())


def test_api_worker_and_migrate_are_built_from_the_repo() -> None:
    assert {"api", "worker", "migrate"} <= set(built_services())


@pytest.mark.parametrize("name", built_services())
def test_built_service_runs_a_real_cli_subcommand(name: str, tmp_path: Path) -> None:
    svc = services()[name]
    assert "command" in svc, f"{name}: a service built from the Dockerfile must set its command"
    command = as_list(svc["command"])
    assert command, f"{name}: empty command"
    proc = cli_help(command[0], tmp_path=tmp_path)
    assert proc.returncode == 0, (
        f"{name}: `archscreen {command[0]} --help` exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
    # Every option the compose file passes must be one the subcommand documents.
    for option in (part.split("=", 1)[0] for part in command[1:] if part.startswith("--")):
        assert option in proc.stdout, f"{name}: `archscreen {command[0]}` has no option {option}"


def test_documented_token_command_exists(tmp_path: Path) -> None:
    # docs/deploy.md: docker compose run --rm api token create --tenant acme
    proc = cli_help("token", "create", tmp_path=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "--tenant" in proc.stdout


def test_migrate_is_one_shot_and_gates_api_and_worker() -> None:
    svcs = services()
    assert svcs["migrate"]["command"] == ["migrate"]
    assert svcs["migrate"].get("restart") == "no"
    for name in ("api", "worker"):
        depends = svcs[name].get("depends_on")
        assert isinstance(depends, dict), f"{name}: depends_on must use the long form with conditions"
        assert depends.get("migrate", {}).get("condition") == "service_completed_successfully", name
        assert depends.get("redis", {}).get("condition") == "service_healthy", name


def test_postgres_and_redis_have_healthchecks() -> None:
    svcs = services()
    assert "pg_isready" in " ".join(as_list(svcs["postgres"]["healthcheck"]["test"]))
    assert "redis-cli ping" in " ".join(as_list(svcs["redis"]["healthcheck"]["test"]))
    assert svcs["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_api_and_worker_share_the_artifacts_volume() -> None:
    svcs = services()
    api = named_volume_targets(svcs["api"])
    worker = named_volume_targets(svcs["worker"])
    assert ARTIFACTS_MOUNT in api, "api does not mount the artifacts volume"
    assert ARTIFACTS_MOUNT in worker, "worker does not mount the artifacts volume"
    assert api[ARTIFACTS_MOUNT] == worker[ARTIFACTS_MOUNT]
    assert api[ARTIFACTS_MOUNT] in (compose().get("volumes") or {}), "declare the volume at top level"


@pytest.mark.parametrize("name", ["api", "worker"])
def test_api_and_worker_environment(name: str) -> None:
    env = services()[name].get("environment")
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    assert isinstance(env, dict), f"{name}: no environment"
    assert str(env.get("ARCHSCREEN_DATABASE_URL", "")).startswith("postgresql+psycopg://"), env
    assert str(env.get("ARCHSCREEN_BROKER_URL", "")).startswith("redis://"), env
    assert env.get("ARCHSCREEN_ARTIFACTS_DIR", ARTIFACTS_MOUNT) == ARTIFACTS_MOUNT


def test_api_publishes_8000_and_worker_has_a_grace_period() -> None:
    svcs = services()
    assert any(str(port).endswith("8000:8000") for port in svcs["api"].get("ports", []))
    assert "stop_grace_period" in svcs["worker"]


def test_metrics_are_served_off_the_published_port() -> None:
    api = services()["api"]
    port = str(api["environment"]["ARCHSCREEN_METRICS_PORT"])
    assert port != "8000"
    assert not any(str(p).split(":")[0] == port or str(p).endswith(f":{port}") for p in api.get("ports", []))


def test_dockerfile_is_multistage_and_non_root() -> None:
    instructions = dockerfile_instructions()
    froms = [args for kw, args in instructions if kw == "FROM"]
    assert len(froms) >= 2, froms
    users = [args for kw, args in instructions if kw == "USER"]
    assert users, "no USER line"
    user = users[-1].split(":", 1)[0]
    assert user not in ("root", "0"), users[-1]


def test_dockerfile_installs_pinned_torch_then_runs_archscreen() -> None:
    instructions = dockerfile_instructions()
    args = [args for kw, args in instructions if kw == "ARG"]
    assert any(a.split("=", 1)[0] == "TORCH_VARIANT" for a in args), args
    runs = " ".join(args for kw, args in instructions if kw == "RUN")
    assert "pip install torch==2.13.0" in runs
    assert "${TORCH_VARIANT}" in runs or "$TORCH_VARIANT" in runs
    entrypoints = [args for kw, args in instructions if kw == "ENTRYPOINT"]
    assert entrypoints == ['["archscreen"]'], entrypoints
    assert any(kw == "HEALTHCHECK" and "/healthz" in args for kw, args in instructions)


def test_dockerignore_keeps_local_state_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    for entry in (".venv", ".ci-venv", ".git", "archscreen-data", "bench/results", "test-artifacts"):
        assert entry in ignored, entry

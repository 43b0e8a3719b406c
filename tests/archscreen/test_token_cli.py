"""`archscreen token list` and `token revoke` as an operator runs them, against a real API process."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.archscreen.test_service_cli import run_cli
from tests.services import free_port


def test_token_list_and_revoke(tmp_path: Path) -> None:
    assert run_cli("migrate", data_dir=tmp_path).returncode == 0
    tokens = [
        run_cli("token", "create", "--tenant", tenant, "--name", label, data_dir=tmp_path)
        .stdout.strip()
        .splitlines()[-1]
        for tenant, label in (("acme", "ci"), ("acme", "laptop"), ("other", "x"))
    ]
    listed = run_cli("token", "list", data_dir=tmp_path)
    assert listed.returncode == 0
    assert all(t not in listed.stdout for t in tokens), "a listing never shows a token"
    assert "ci" in listed.stdout and "laptop" in listed.stdout and "other" in listed.stdout
    rows = json.loads(run_cli("token", "list", "--tenant", "acme", "--json", data_dir=tmp_path).stdout)
    assert [(r["tenant"], r["name"], r["revoked_at"]) for r in rows] == [
        ("acme", "ci", None),
        ("acme", "laptop", None),
    ]
    assert rows[0]["prefix"] == tokens[0][:8]

    from tests.services import RunningService

    svc = RunningService(tmp_path, f"sqlite:///{tmp_path / 'archscreen.db'}", None, auth_cache_s="0")
    svc.env["ARCHSCREEN_DATA_DIR"] = str(tmp_path)
    svc.port = free_port()
    svc.url = f"http://127.0.0.1:{svc.port}"
    svc.start_api()
    try:
        svc.wait_healthy()
        ok = httpx.get(f"{svc.url}/api/v1/studies", headers={"Authorization": f"Bearer {tokens[0]}"})
        assert ok.status_code == 200

        revoked = run_cli("token", "revoke", str(rows[0]["id"]), data_dir=tmp_path)
        assert revoked.returncode == 0 and "revoked token" in revoked.stdout, revoked.stderr
        again = run_cli("token", "revoke", rows[0]["prefix"], data_dir=tmp_path)
        assert again.returncode == 0, "revoking twice is safe"
        refused = httpx.get(f"{svc.url}/api/v1/studies", headers={"Authorization": f"Bearer {tokens[0]}"})
        assert refused.status_code == 401
        still = httpx.get(f"{svc.url}/api/v1/studies", headers={"Authorization": f"Bearer {tokens[1]}"})
        assert still.status_code == 200, "other tokens keep working"
    finally:
        svc.stop()
    rows = json.loads(run_cli("token", "list", "--tenant", "acme", "--json", data_dir=tmp_path).stdout)
    assert rows[0]["revoked_at"] is not None and rows[1]["revoked_at"] is None
    missing = run_cli("token", "revoke", "as_nope", data_dir=tmp_path)
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
    assert "no token" in missing.stderr and "Traceback" not in missing.stderr

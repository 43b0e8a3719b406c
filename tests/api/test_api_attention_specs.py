"""POST candidates accepts the attention layers of the spec DSL and names their errors' paths."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from archscreen.api.app import create_app
from archscreen.core.data import CharText
from archscreen.settings import Settings
from archscreen.store import Database
from archscreen.store.auth import create_token

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "char_transformer.yaml"


@pytest.fixture
def client(database_url: str, tmp_path: Path, migrated: Database) -> TestClient:
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    settings.ensure_dirs()
    with TestClient(create_app(settings)) as c:
        yield c  # type: ignore[misc]


@pytest.fixture
def auth(migrated: Database) -> dict[str, str]:
    with migrated.session() as s:
        return {"Authorization": f"Bearer {create_token(s, 'acme')}"}


def test_transformer_candidate_is_accepted_and_bad_heads_get_a_path(
    client: TestClient, auth: dict[str, str]
) -> None:
    r = client.post("/api/v1/studies", json={"name": "lm", "dataset": "chartext"}, headers=auth)
    assert r.status_code == 201, r.text
    url = f"/api/v1/studies/{r.json()['id']}/candidates"

    r = client.post(url, json={"spec": EXAMPLE.read_text()}, headers=auth)
    assert r.status_code == 201, r.text
    created = r.json()["data"][0]
    detail = client.get(f"/api/v1/candidates/{created['id']}", headers=auth).json()
    kinds = [row["kind"] for row in detail["summary"]]
    assert kinds == ["embedding", "positional", "transformer_block", "transformer_block", "layernorm"]
    assert detail["summary"][2]["output_shape"] == [64, 32]
    vocab = CharText().info().vocab_size
    assert vocab is not None
    head = 32 * vocab + vocab  # one Linear(32, vocab) copy
    assert detail["num_params"] == sum(row["params"] for row in detail["summary"]) + head

    bad = {"head": "classifier", "layers": [{"embedding": 32}, {"attention": {"heads": 5, "dim": 32}}]}
    r = client.post(url, json={"spec": bad}, headers=auth)
    assert r.status_code == 422
    issue = r.json()["detail"][0]
    assert issue["path"] == "body.spec.layers[1].attention.heads"
    assert issue["msg"] == "must divide dim (32), got 5"

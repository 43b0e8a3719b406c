"""Hostile input against a real ``archscreen api`` process, on SQLite and on PostgreSQL.

Each case was a defect found by an outside test (issue 18): a YAML alias bomb that took the API
to 14 GB, 500s from NUL bytes, inf floats and deep nesting, and an unbounded request body.
Every answer must be a 4xx naming the field, fast, with the server's memory bounded.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.services import BACKENDS, RunningService, service_backend

MLP = {"name": "mlp", "layers": ["flatten", {"linear": 16}, "relu"], "head": "classifier"}


@pytest.fixture(params=BACKENDS)
def api(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningService]:
    for svc in service_backend(request, tmp_path):
        svc.start_api()
        svc.wait_healthy()
        yield svc


def auth(svc: RunningService) -> dict[str, str]:
    return {"Authorization": f"Bearer {svc.token}"}


def new_study(svc: RunningService, name: str = "s") -> int:
    r = httpx.post(f"{svc.url}/api/v1/studies", json={"name": name, "dataset": "mnist1d"}, headers=auth(svc))
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def alias_bomb(levels: int, fanout: int = 10) -> str:
    """YAML whose ``name`` expands to ``fanout ** levels`` leaves (10^9 for levels=9) in ~600 bytes."""
    lines = ["a0: &a0 [x]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * fanout) + "]")
    lines += [f"name: *a{levels}", "head: classifier", "layers: [flatten]"]
    return "\n".join(lines)


def test_yaml_alias_bomb_is_refused_fast_with_bounded_memory(api: RunningService) -> None:
    study = new_study(api)
    pid = api.procs["api"].pid  # type: ignore[attr-defined]
    url = f"{api.url}/api/v1/studies/{study}/candidates"
    # warm the route (imports, dataset info) so the peak below measures the bomb alone
    assert httpx.post(url, json={"spec": MLP}, headers=auth(api), timeout=60).status_code == 201
    before = peak_rss_mb(pid)
    t0 = time.monotonic()
    r = httpx.post(url, json={"spec": alias_bomb(9)}, headers=auth(api), timeout=60)
    seconds = time.monotonic() - t0
    grown = peak_rss_mb(pid) - before
    print(f"alias bomb (10^9 leaves): 422 in {seconds * 1000:.0f} ms, API peak RSS +{grown:.1f} MB")
    assert r.status_code == 422, r.text[:500]
    detail = r.json()["detail"]
    assert detail[0]["path"] == "body.spec" and "alias" in detail[0]["msg"], detail
    assert len(r.content) < 2000, "an error body must not echo the expanded value"
    assert seconds < 1.0, f"refused after {seconds:.2f} s"
    assert grown < 50, f"peak RSS grew by {grown:.0f} MB"


def test_small_alias_bomb_in_a_field_echoes_only_a_prefix(api: RunningService) -> None:
    """Under the expansion cap (10^4 leaves), a wrong-typed aliased value is quoted in a few chars."""
    study = new_study(api)
    r = httpx.post(
        f"{api.url}/api/v1/studies/{study}/candidates",
        json={"spec": alias_bomb(4)},
        headers=auth(api),
        timeout=30,
    )
    assert r.status_code == 422, r.text[:500]
    paths = [d["path"] for d in r.json()["detail"]]
    assert "body.spec.name" in paths, paths
    assert len(r.content) < 4000, len(r.content)


@pytest.mark.parametrize(
    "spec_text",
    [
        "layers: " + "[" * 1000 + "]" * 1000 + "\nhead: classifier",
        '{"layers": ' + "[" * 1000 + "]" * 1000 + ', "head": "classifier"}',
    ],
    ids=["yaml", "json-text"],
)
def test_deeply_nested_spec_text_is_a_422(api: RunningService, spec_text: str) -> None:
    study = new_study(api)
    r = httpx.post(
        f"{api.url}/api/v1/studies/{study}/candidates", json={"spec": spec_text}, headers=auth(api)
    )
    assert r.status_code == 422, r.text[:500]
    assert r.json()["detail"][0]["path"] == "body.spec"
    assert "nested deeper" in r.json()["detail"][0]["msg"]


def test_deeply_nested_spec_object_is_a_4xx(api: RunningService) -> None:
    study = new_study(api)
    nested: object = []
    for _ in range(400):
        nested = [nested]
    body = {"spec": {"layers": nested, "head": "classifier"}}
    r = httpx.post(f"{api.url}/api/v1/studies/{study}/candidates", json=body, headers=auth(api))
    assert r.status_code == 422, r.text[:500]
    assert r.json()["detail"][0]["path"].startswith("body.spec"), r.text[:500]
    # deeper than the JSON parser's own recursion limit: a 4xx, never a 500
    raw = '{"spec": {"layers": ' + "[" * 100_000 + "]" * 100_000 + ', "head": "classifier"}}'
    r = httpx.post(
        f"{api.url}/api/v1/studies/{study}/candidates",
        content=raw,
        headers={**auth(api), "Content-Type": "application/json"},
    )
    assert 400 <= r.status_code < 500, r.text[:500]


def test_non_finite_floats_are_a_422_naming_the_field(api: RunningService) -> None:
    for value in ("1e999", "-1e999", "NaN", "Infinity"):
        raw = '{"name": "inf", "dataset": "mnist1d", "screening": {"lr_max": ' + value + "}}"
        r = httpx.post(
            f"{api.url}/api/v1/studies",
            content=raw,
            headers={**auth(api), "Content-Type": "application/json"},
        )
        assert r.status_code == 422, (value, r.text)
        assert [d["path"] for d in r.json()["detail"]] == ["body.screening.lr_max"], r.text
    # nothing was stored
    assert httpx.get(f"{api.url}/api/v1/studies", headers=auth(api)).json()["count"] == 0


def test_nul_characters_are_a_422_naming_the_field(api: RunningService) -> None:
    r = httpx.get(f"{api.url}/api/v1/studies", params={"name": "a\x00b"}, headers=auth(api))
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["path"] == "query.name"
    study = new_study(api)
    url = f"{api.url}/api/v1/studies/{study}/candidates"
    r = httpx.post(url, json={"spec": MLP, "name": "x\x00y"}, headers=auth(api))
    assert r.status_code == 422 and r.json()["detail"][0]["path"] == "body.name", r.text
    r = httpx.post(url, json={"spec": {**MLP, "name": "x\x00y"}}, headers=auth(api))
    assert r.status_code == 422 and r.json()["detail"][0]["path"].startswith("body.spec"), r.text
    r = httpx.post(
        url, json={"spec": 'name: "x\\0y"\nhead: classifier\nlayers: [flatten]'}, headers=auth(api)
    )
    assert r.status_code == 422 and r.json()["detail"][0]["path"].startswith("body.spec"), r.text
    r = httpx.post(
        f"{api.url}/api/v1/studies", json={"name": "ok", "dataset": "mnist\x001d"}, headers=auth(api)
    )
    assert r.status_code == 422 and r.json()["detail"][0]["path"] == "body.dataset", r.text
    # the study and its candidate list are intact
    assert httpx.get(url, headers=auth(api)).json()["count"] == 0


def test_oversized_body_is_a_413_naming_the_limit_and_health_stays_responsive(api: RunningService) -> None:
    study = new_study(api)
    big = json.dumps([{"spec": MLP, "name": f"c{i}"} for i in range(250_000)]).encode()
    assert len(big) > 20_000_000
    stalls: list[float] = []
    done = threading.Event()

    def poll_health() -> None:
        while not done.is_set():
            t0 = time.monotonic()
            httpx.get(f"{api.url}/healthz", timeout=30)
            stalls.append(time.monotonic() - t0)
            time.sleep(0.05)

    poller = threading.Thread(target=poll_health)
    poller.start()
    try:
        t0 = time.monotonic()
        r = httpx.post(
            f"{api.url}/api/v1/studies/{study}/candidates",
            content=big,
            headers={**auth(api), "Content-Type": "application/json"},
            timeout=60,
        )
        seconds = time.monotonic() - t0
    finally:
        done.set()
        poller.join()
    worst = max(stalls) * 1000
    print(f"{len(big) / 1e6:.0f} MB body: 413 in {seconds * 1000:.0f} ms, worst /healthz {worst:.0f} ms")
    assert r.status_code == 413, r.text[:300]
    assert r.json()["limit_bytes"] == 4 * 1024 * 1024 and "4,194,304" in r.json()["detail"]
    assert seconds < 2.0, f"413 after {seconds:.2f} s"
    assert max(stalls) < 1.0, f"/healthz stalled {max(stalls):.2f} s"
    # a chunked body (no Content-Length) is cut off while streaming
    r = httpx.post(
        f"{api.url}/api/v1/studies/{study}/candidates",
        content=iter([big[i : i + 65536] for i in range(0, 8_000_000, 65536)]),
        headers={**auth(api), "Content-Type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 413, r.text[:300]


def test_too_many_candidates_in_one_request_is_a_422_with_the_limit(api: RunningService) -> None:
    study = new_study(api)
    r = httpx.post(
        f"{api.url}/api/v1/studies/{study}/candidates",
        json=[{"spec": MLP, "name": f"c{i}"} for i in range(501)],
        headers=auth(api),
    )
    assert r.status_code == 422 and "at most 500 per request" in r.json()["detail"][0]["msg"], r.text[:300]

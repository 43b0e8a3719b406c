"""Ranking, promotion, tuning jobs and the leaderboard over the API.

Screening results are written through the store's life cycle (claim → finish), as a worker
would; the end-to-end tests in tests/worker/ produce them by real training.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from archscreen.api.app import create_app
from archscreen.settings import Settings
from archscreen.store import Database, Job
from archscreen.store import jobs as job_store
from archscreen.store.auth import create_token
from archscreen.worker.promotion import CHECK_TASK, after_screening_finished

POSTERIOR = [{"lr": 0.01, "weight": 0.5}, {"lr": 1.0, "weight": 0.5}]  # geometric mean 0.1


def spec(width: int) -> dict:
    return {"name": f"mlp{width}", "layers": ["flatten", {"linear": width}, "relu"], "head": "classifier"}


@pytest.fixture
def env(database_url: str, tmp_path: Path, migrated: Database):  # type: ignore[no-untyped-def]
    settings = Settings(data_dir=tmp_path / "data", database_url=database_url)
    settings.ensure_dirs()
    with migrated.session() as s:
        auth = {"Authorization": f"Bearer {create_token(s, 'acme')}"}
    with TestClient(create_app(settings)) as client:
        yield client, auth, migrated


def finish_screen(
    db: Database, candidate_id: int, seed: int, val_loss: float | None, state: str = "succeeded"
) -> None:
    with db.session() as s:
        job = s.query(Job).filter_by(candidate_id=candidate_id, kind="screen", seed=seed).one()
        job_store.claim(s, job.id, "w", 30)
    result = None
    if val_loss is not None:
        result = {
            "val_loss": val_loss,
            "val_accuracy": 1 - val_loss / 3,
            "test_accuracy": 0.5,
            "switch_posterior": POSTERIOR,
            "preferred_lr": 0.1,
            "lr_range": [1e-5, 10.0],
        }
    with db.session() as s:
        assert job_store.finish(s, job.id, "w", state, result=result)


def make(client: TestClient, auth: dict, seeds: list[int], n: int) -> tuple[int, list[int]]:
    study = client.post(
        "/api/v1/studies",
        headers=auth,
        json={
            "name": "r",
            "dataset": "mnist1d",
            "screening": {"seeds": seeds, "max_epochs": 2, "base": "sgd"},
            "policy": {"tuning_start": "multi"},  # the multi-start promotion these tests are about
        },
    ).json()
    cands = client.post(
        f"/api/v1/studies/{study['id']}/candidates",
        headers=auth,
        json=[{"spec": spec(8 * (i + 1))} for i in range(n)],
    ).json()["data"]
    return study["id"], [c["id"] for c in cands]


def test_ranking_orders_marks_ties_and_lists_unfinished_apart(env) -> None:  # type: ignore[no-untyped-def]
    client, auth, db = env
    sid, (a, b, c, d, e) = make(client, auth, [0, 1], 5)
    for seed, (la, lb, lc) in enumerate([(1.0, 0.50, 0.55), (1.2, 0.60, 0.65)]):
        finish_screen(db, a, seed, la)
        finish_screen(db, b, seed, lb)
        finish_screen(db, c, seed, lc)
    finish_screen(db, d, 0, None, state="diverged")
    finish_screen(db, d, 1, 2.0)  # one seed diverged: the candidate is not ranked
    r = client.get(f"/api/v1/studies/{sid}/ranking", headers=auth).json()
    assert [row["candidate_id"] for row in r["data"]] == [b, c, a] and r["count"] == 3
    assert [row["rank"] for row in r["data"]] == [1, 2, 3]
    top = r["data"][0]
    assert (
        top["score"] == pytest.approx(0.55)
        and top["seeds"] == 2
        and top["score_std"] == pytest.approx(0.0707, abs=1e-3)
    )
    assert top["tied_with"] == [c] and r["data"][2]["tied_with"] == []  # b and c overlap within their spread
    assert top["preferred_lr"] == pytest.approx(0.1)
    assert {row["candidate_id"]: row["state"] for row in r["unranked"]} == {d: "diverged", e: "queued"}
    acc = client.get(f"/api/v1/studies/{sid}/ranking?metric=val_accuracy&k=1", headers=auth).json()
    assert acc["higher_is_better"] and [row["candidate_id"] for row in acc["data"]] == [b]
    assert client.get(f"/api/v1/studies/{sid}/ranking?metric=bogus", headers=auth).status_code == 422


def test_candidate_ranking_and_summary_agree_on_preferred_lr_when_a_seed_failed(env) -> None:  # type: ignore[no-untyped-def]
    client, auth, db = env
    sid, (mixed, clean) = make(client, auth, [0, 1, 2], 2)
    runs = {  # (candidate, seed): (state, preferred_lr)
        (mixed, 0): ("succeeded", 0.01),
        (mixed, 1): ("succeeded", 0.04),
        (mixed, 2): ("failed", 10.0),  # a failed seed's rate is no preference
        (clean, 0): ("succeeded", 0.1),
        (clean, 1): ("succeeded", 0.1),
        (clean, 2): ("succeeded", 0.4),
    }
    for (cid, seed), (state, lr) in runs.items():
        with db.session() as s:
            job = s.query(Job).filter_by(candidate_id=cid, kind="screen", seed=seed).one()
            job_store.claim(s, job.id, "w", 30)
        with db.session() as s:
            assert job_store.finish(s, job.id, "w", state, result={"val_loss": 0.5, "preferred_lr": lr})
    expected = {mixed: 0.02, clean: 0.4 ** (1 / 3) * 0.1 ** (2 / 3)}  # geometric means of succeeded seeds
    ranking = client.get(f"/api/v1/studies/{sid}/ranking", headers=auth).json()
    summary = client.get(f"/api/v1/studies/{sid}/summary", headers=auth).json()
    by_ranking = {r["candidate_id"]: r["preferred_lr"] for r in [*ranking["data"], *ranking["unranked"]]}
    by_summary = {r["id"]: r["preferred_lr"] for r in summary["candidates"]}
    for cid, lr in expected.items():
        detail = client.get(f"/api/v1/candidates/{cid}", headers=auth).json()
        assert detail["preferred_lr"] == pytest.approx(lr, rel=1e-12)
        assert by_ranking[cid] == detail["preferred_lr"] == by_summary[cid]
    assert [r["candidate_id"] for r in ranking["unranked"]] == [mixed]  # failed: not ranked, rate shown
    board = client.get(f"/api/v1/studies/{sid}/leaderboard", headers=auth).json()
    assert board["data"][0]["preferred_lr"] == by_ranking[clean]


def test_promotion_is_idempotent_and_starts_from_the_posterior(env) -> None:  # type: ignore[no-untyped-def]
    client, auth, db = env
    sid, (a, b, c) = make(client, auth, [0], 3)
    r = client.post(f"/api/v1/studies/{sid}/promote", headers=auth, json={"top_k": 1})
    assert r.status_code == 422 and r.json()["detail"][0]["path"] == "body.top_k"  # nothing finished yet
    finish_screen(db, a, 0, 0.9)
    finish_screen(db, b, 0, 0.4)
    # one start: the single job of before (the posterior's weighted geometric mean)
    r = client.post(f"/api/v1/studies/{sid}/promote", headers=auth, json={"top_k": 1, "starts": 1})
    assert r.status_code == 201 and len(r.json()["data"]) == 1
    job = r.json()["data"][0]
    assert job["candidate_id"] == b and job["kind"] == "tune" and job["state"] == "queued"
    assert job["start"] is None and job["init_lr"] == pytest.approx(0.1)
    # again, with the policy's 3 starts: b keeps its one job, none added
    again = client.post(f"/api/v1/studies/{sid}/promote", headers=auth, json={"candidate_ids": [b]})
    assert again.status_code == 200 and [j["id"] for j in again.json()["data"]] == [job["id"]]
    with db.session() as s:
        stored = s.get(Job, job["id"])
        assert stored is not None and stored.config == {"tuner": "fd2", "init_lr": pytest.approx(0.1)}
    bad = client.post(f"/api/v1/studies/{sid}/promote", headers=auth, json={"candidate_ids": [c]})
    assert bad.status_code == 422 and "no successful screening run" in bad.json()["detail"][0]["msg"]
    assert (
        client.post(f"/api/v1/studies/{sid}/promote", headers=auth, json={"candidate_ids": [999]}).status_code
        == 422
    )
    both = client.post(
        f"/api/v1/studies/{sid}/promote", headers=auth, json={"top_k": 1, "candidate_ids": [a]}
    )
    assert both.status_code == 422
    detail = client.get(f"/api/v1/tuning-jobs/{job['id']}", headers=auth).json()
    assert detail["state"] == "queued" and detail["curves"] == []
    assert client.get(f"/api/v1/studies/{sid}/tuning-jobs", headers=auth).json()["count"] == 1
    board = client.get(f"/api/v1/studies/{sid}/leaderboard", headers=auth).json()
    assert [row["candidate_id"] for row in board["data"]] == [b, a]
    assert board["best"]["candidate_id"] == b and board["best"]["tuned_score"] is None
    assert board["data"][0]["tuning_state"] == "queued"
    assert client.post(f"/api/v1/tuning-jobs/{job['id']}/cancel", headers=auth).json()["states"] == {
        str(job["id"]): "cancelled"
    }
    assert client.get("/api/v1/tuning-jobs/424242", headers=auth).status_code == 404


def test_cancelling_the_last_screening_run_fires_auto_promotion(env) -> None:  # type: ignore[no-untyped-def]
    client, auth, db = env
    study = client.post(
        "/api/v1/studies",
        headers=auth,
        json={
            "name": "auto",
            "dataset": "mnist1d",
            "policy": {"top_k": 2, "auto": True, "tuning_start": "multi"},
        },
    ).json()
    cands = client.post(
        f"/api/v1/studies/{study['id']}/candidates",
        headers=auth,
        json=[{"spec": spec(8)}, {"spec": spec(16)}],
    ).json()["data"]
    a, b = (c["id"] for c in cands)
    finish_screen(db, a, 0, 0.7)
    etag = client.get(f"/api/v1/studies/{study['id']}", headers=auth).headers["ETag"]
    settings = client.app.state.settings  # type: ignore[attr-defined]
    before = set(promotion_checks(settings))
    assert client.post(f"/api/v1/candidates/{b}/cancel", headers=auth).status_code == 202
    # the request did not promote: it sent the check to the workers, by study id
    jobs = client.get(f"/api/v1/studies/{study['id']}/tuning-jobs", headers=auth).json()
    assert jobs["count"] == 0
    sent = [args for name, args in promotion_checks(settings).items() if name not in before]
    assert sent == [[study["id"]]]
    # what the worker's task runs (worker/tasks.py: promotion_check): promotes once, idempotent
    assert len(after_screening_finished(db, settings, study["id"])) == 3  # the policy's 3 starts
    assert after_screening_finished(db, settings, study["id"]) == []
    jobs = client.get(f"/api/v1/studies/{study['id']}/tuning-jobs", headers=auth).json()
    assert [j["candidate_id"] for j in jobs["data"]] == [a] * 3  # b was cancelled: only a is tuned
    assert [j["start"] for j in jobs["data"]] == ["p50", "p25", "p75"]
    now = client.get(f"/api/v1/studies/{study['id']}", headers={**auth, "If-None-Match": etag})
    assert now.status_code == 200 and now.json()["auto_promoted"]


def promotion_checks(settings: Settings) -> dict[str, list[int]]:
    """``{message file: args}`` of the promotion-check messages in the embedded broker's queue."""
    out = {}
    for f in (settings.broker_folder / "queue").iterdir():
        msg = json.loads(f.read_text())
        if msg["headers"]["task"] == CHECK_TASK:
            out[f.name] = json.loads(base64.b64decode(msg["body"]))[0]
    return out


@pytest.mark.parametrize(("tuner", "expected"), [("ag-adam", [0.1, 0.01, 1.0]), ("fd2", None)])
def test_promotion_after_alrao_adam_starts_only_adam_tuners_from_the_posterior(env, tuner, expected) -> None:  # type: ignore[no-untyped-def]
    client, auth, db = env
    study = client.post(
        "/api/v1/studies",
        headers=auth,
        json={
            "name": "a",
            "dataset": "mnist1d",
            "screening": {"seeds": [0], "max_epochs": 2, "base": "adam"},
            "policy": {"tuning_start": "multi"},
        },
    ).json()
    cid = client.post(
        f"/api/v1/studies/{study['id']}/candidates", headers=auth, json=[{"spec": spec(8)}]
    ).json()["data"][0]["id"]
    finish_screen(db, cid, 0, 0.5)
    r = client.post(f"/api/v1/studies/{study['id']}/promote", headers=auth, json={"top_k": 1, "tuner": tuner})
    assert r.status_code == 201, r.text
    with db.session() as s:
        stored = [s.get(Job, j["id"]) for j in r.json()["data"]]
        if expected is not None:  # Adam posterior, Adam tuner: the posterior's quartiles, median first
            assert [j.config for j in stored] == [  # type: ignore[union-attr]
                {
                    "tuner": tuner,
                    "init_lr": pytest.approx(lr),
                    "start": label,
                    "start_quantile": q,
                    "train_seed": 0,
                }
                for lr, label, q in zip(expected, ["p50", "p25", "p75"], [0.5, 0.25, 0.75], strict=True)
            ]
        else:  # Adam posterior, SGD tuner: one job from the tuner's own default, and the config says so
            assert [j.config for j in stored] == [  # type: ignore[union-attr]
                {"tuner": tuner, "init_lr": 0.01, "init_lr_source": "tuner_default"}
            ]


def finish_tune(db: Database, job_id: int, state: str, val_loss: float | None = None, **extra: float) -> None:
    with db.session() as s:
        job_store.claim(s, job_id, "t", 30)
    if state == "running":
        return
    result = None if val_loss is None else {"val_loss": val_loss, "recommended_lr": val_loss / 10, **extra}
    with db.session() as s:
        assert job_store.finish(s, job_id, "t", state, result=result)


def test_three_starts_are_three_jobs_and_the_answer_is_the_best_by_validation(env) -> None:  # type: ignore[no-untyped-def]
    client, auth, db = env
    sid, (a, b) = make(client, auth, [0], 2)
    finish_screen(db, a, 0, 0.9)
    finish_screen(db, b, 0, 0.4)
    bad = client.post(f"/api/v1/studies/{sid}/promote", headers=auth, json={"top_k": 1, "starts": 4})
    assert bad.status_code == 422 and bad.json()["detail"][0]["path"] == "body.starts"
    r = client.post(f"/api/v1/studies/{sid}/promote", headers=auth, json={"top_k": 1})  # the policy's 3
    assert r.status_code == 201
    jobs = r.json()["data"]
    assert [(j["candidate_id"], j["seed"], j["start"]) for j in jobs] == [
        (b, 0, "p50"),
        (b, 1, "p25"),
        (b, 2, "p75"),
    ]
    assert [j["init_lr"] for j in jobs] == [pytest.approx(0.1), pytest.approx(0.01), pytest.approx(1.0)]
    with db.session() as s:  # every start trains with one seed: only the starting rate differs
        assert {s.get(Job, j["id"]).config["train_seed"] for j in jobs} == {0}  # type: ignore[union-attr]
    ids = [j["id"] for j in jobs]
    for body in ({"top_k": 1}, {"candidate_ids": [b], "starts": 1}, {"candidate_ids": [b], "starts": 2}):
        again = client.post(f"/api/v1/studies/{sid}/promote", headers=auth, json=body)
        assert again.status_code == 200 and [j["id"] for j in again.json()["data"]] == ids

    def board_row() -> dict:
        board = client.get(f"/api/v1/studies/{sid}/leaderboard", headers=auth).json()
        return next(row for row in board["data"] if row["candidate_id"] == b)

    assert board_row()["tuning_state"] == "queued" and board_row()["tuned_score"] is None
    p50, p25, p75 = ids
    finish_tune(db, p50, "succeeded", 0.30, test_loss=0.2)
    finish_tune(db, p25, "running")
    row = board_row()  # the answer so far, while a start still runs
    assert (row["tuning_state"], row["tuning_job_id"], row["tuned_score"]) == ("running", p50, 0.30)
    with db.session() as s:
        job_store.finish(s, p25, "t", "succeeded", result={"val_loss": 0.25, "recommended_lr": 0.025})
    finish_tune(db, p75, "diverged", 0.01)  # a diverged start's val loss is no answer
    row = board_row()
    assert (row["tuning_state"], row["tuning_job_id"], row["tuning_start"]) == ("succeeded", p25, "p25")
    assert (row["tuned_score"], row["recommended_lr"]) == (0.25, 0.025)
    board = client.get(f"/api/v1/studies/{sid}/leaderboard", headers=auth).json()
    assert board["best"]["candidate_id"] == b and board["best"]["tuning_job_id"] == p25
    ranked = client.get(f"/api/v1/studies/{sid}/ranking", headers=auth).json()["data"]
    top = next(r for r in ranked if r["candidate_id"] == b)
    assert (top["tuning_job_id"], top["tuning_start"], top["tuning_jobs"], top["tuned_score"]) == (
        p25,
        "p25",
        3,
        0.25,
    )
    summary = client.get(f"/api/v1/studies/{sid}/summary", headers=auth).json()
    assert summary["ranking"]["data"][0]["tuning_job_id"] == p25
    # every start stays listed, with its label and state
    listed = client.get(f"/api/v1/studies/{sid}/tuning-jobs", headers=auth).json()
    assert [(j["id"], j["start"], j["state"]) for j in listed["data"]] == [
        (p50, "p50", "succeeded"),
        (p25, "p25", "succeeded"),
        (p75, "p75", "diverged"),
    ]
    assert [j["id"] for j in summary["tuning_jobs"]] == ids


def finish_with(db: Database, candidate_id: int, result: dict) -> None:
    with db.session() as s:
        job = s.query(Job).filter_by(candidate_id=candidate_id, kind="screen", seed=0).one()
        job_store.claim(s, job.id, "w", 30)
    with db.session() as s:
        assert job_store.finish(s, job.id, "w", "succeeded", result=result)


def test_ranking_by_balanced_accuracy_and_macro_f1_for_imbalanced_classes(env) -> None:  # type: ignore[no-untyped-def]
    client, auth, db = env
    study = client.post(
        "/api/v1/studies",
        headers=auth,
        json={
            "name": "imbalanced",
            "dataset": "mnist1d",
            "screening": {"seeds": [0], "max_epochs": 2, "base": "sgd"},
            "policy": {"metric": "val_balanced_accuracy"},
        },
    ).json()
    sid = study["id"]
    majority, balanced, old = (
        c["id"]
        for c in client.post(
            f"/api/v1/studies/{sid}/candidates",
            headers=auth,
            json=[{"spec": spec(8 * (i + 1))} for i in range(3)],
        ).json()["data"]
    )
    # a majority-class guesser has the best accuracy and the worst class-balanced scores
    finish_with(
        db,
        majority,
        {"val_loss": 0.3, "val_accuracy": 0.90, "val_balanced_accuracy": 0.50, "val_macro_f1": 0.47},
    )
    finish_with(
        db,
        balanced,
        {"val_loss": 0.4, "val_accuracy": 0.85, "val_balanced_accuracy": 0.80, "val_macro_f1": 0.75},
    )
    finish_with(db, old, {"val_loss": 0.5, "val_accuracy": 0.80})  # stored before the new metrics

    def order(metric: str) -> tuple[list[int], list[int]]:
        r = client.get(f"/api/v1/studies/{sid}/ranking?metric={metric}", headers=auth).json()
        assert r["metric"] == metric and r["higher_is_better"]
        return [x["candidate_id"] for x in r["data"]], [x["candidate_id"] for x in r["unranked"]]

    assert order("val_accuracy") == ([majority, balanced, old], [])
    # an old result lacks the metric: listed apart with the unfinished, not ranked, no error
    assert order("val_balanced_accuracy") == ([balanced, majority], [old])
    assert order("val_macro_f1") == ([balanced, majority], [old])
    # the study's configured metric orders its summary (the dashboard's ranking)
    summary = client.get(f"/api/v1/studies/{sid}/summary", headers=auth).json()["ranking"]
    assert summary["metric"] == "val_balanced_accuracy"
    assert [x["candidate_id"] for x in summary["data"]] == [balanced, majority]
    bad = client.get(f"/api/v1/studies/{sid}/ranking?metric=balanced", headers=auth)
    assert bad.status_code == 422 and "val_macro_f1" in bad.text

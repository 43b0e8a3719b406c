"""store/ranking.py: a candidate's tuned answer among its starts, and promotion's persistence of them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from archscreen.store import Database, Job, ranking
from archscreen.store import jobs as job_store
from archscreen.store import studies as study_store
from archscreen.store.records import CandidateBrief, JobRecord
from archscreen.worker import promotion
from tests.store.test_jobs import add, make_study


def job(
    job_id: int,
    kind: str = "tune",
    seed: int = 0,
    state: str = "succeeded",
    result: dict[str, Any] | None = None,
    start: str | None = None,
) -> JobRecord:
    return JobRecord(
        id=job_id,
        kind=kind,  # type: ignore[arg-type]
        study_id=1,
        candidate_id=1,
        seed=seed,
        state=state,  # type: ignore[arg-type]
        attempts=1,
        max_attempts=3,
        cancel_requested=False,
        error=None,
        config={"tuner": "fd2", "init_lr": 0.1, **({"start": start} if start else {})},
        result=result,
        epoch=1,
        max_epochs=1,
        elapsed_s=1.0,
        created_at=datetime(2026, 1, 1),
        started_at=None,
        finished_at=None,
    )


SCREEN = job(
    1, "screen", result={"val_loss": 1.0, "val_accuracy": 0.5, "test_loss": 1.1, "test_accuracy": 0.5}
)
CAND = [CandidateBrief(id=1, study_id=1, name="c", num_params=1)]


def row(jobs: list[JobRecord], metric: str = "val_loss") -> ranking.RankRow:
    ranked, _ = ranking.rank(CAND, [SCREEN, *jobs], metric)
    return ranked[0]


def scores(val_loss: float, val_accuracy: float, test_loss: float, test_accuracy: float) -> dict[str, Any]:
    return {
        "val_loss": val_loss,
        "val_accuracy": val_accuracy,
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
        "recommended_lr": val_loss / 10,
    }


def test_the_tuned_answer_is_the_start_with_the_best_validation_score() -> None:
    p50 = job(10, seed=0, start="p50", result=scores(0.30, 0.90, 0.20, 0.95))
    p25 = job(11, seed=1, start="p25", result=scores(0.25, 0.85, 0.90, 0.70))
    p75 = job(12, seed=2, state="diverged", start="p75", result={"val_loss": 0.01})
    r = row([p50, p25, p75])
    assert (r.tuning_job_id, r.tuning_start, r.tuning_jobs) == (11, "p25", 3)
    assert (r.tuning_state, r.tuned_score, r.recommended_lr) == ("succeeded", 0.25, 0.025)
    # ranked by an accuracy: the best validation accuracy
    assert row([p50, p25, p75], "val_accuracy").tuning_job_id == 10
    # ranked by a test metric: chosen by its validation side (the test split never picks), reported
    # on the test metric; p50's better test loss does not make it the answer
    r = row([p50, p25, p75], "test_loss")
    assert (r.tuning_job_id, r.tuned_score) == (11, 0.90)
    assert row([p50, p25, p75], "test_accuracy").tuning_job_id == 10
    # a tie on the validation score: the lower seed
    same = job(13, seed=2, start="p75", result=scores(0.25, 0.85, 0.1, 0.99))
    assert row([same, p25]).tuning_job_id == 11


def test_the_tuning_state_waits_for_the_starts_and_a_failed_start_does_not_undo_the_answer() -> None:
    done = job(10, seed=0, start="p50", result=scores(0.3, 0.9, 0.2, 0.95))
    running = job(11, seed=1, state="running", start="p25")
    r = row([done, running])
    # the answer so far, while a start still runs
    assert (r.tuning_state, r.tuning_job_id, r.tuned_score) == ("running", 10, 0.3)
    r = row([job(10, seed=0, state="queued", start="p50"), job(11, seed=1, state="failed", start="p25")])
    assert (r.tuning_state, r.tuning_job_id, r.tuned_score) == ("queued", 10, None)  # the first start's
    r = row([job(10, seed=0, state="failed"), job(11, seed=1, state="cancelled")])
    assert (r.tuning_state, r.tuning_job_id) == ("failed", 10)
    r = row([done, job(11, seed=1, state="diverged", start="p25")])
    assert r.tuning_state == "succeeded"
    # a single start (studies from before starts): as before
    r = row([job(10, result=scores(0.4, 0.8, 0.5, 0.8))])
    assert (r.tuning_job_id, r.tuning_start, r.tuning_jobs, r.tuned_score) == (10, None, 1, 0.4)
    assert row([]).tuning_job_id is None and row([]).tuning_jobs == 0


TWO_COPIES = {
    "val_loss": 1.0,
    "switch_posterior": [{"lr": 0.01, "weight": 0.5}, {"lr": 1.0, "weight": 0.5}],
    "lr_range": [1e-5, 10],
}


def screened(db: Database, policy: dict[str, Any]) -> tuple[int, int]:
    sid = make_study(db, policy=policy)
    job_ids = add(db, sid)
    for i, job_id in enumerate(job_ids):
        with db.session() as s:
            job_store.claim(s, job_id, f"w{i}", 30)
        with db.session() as s:
            job_store.finish(s, job_id, f"w{i}", "succeeded", result=TWO_COPIES)
    with db.session() as s:
        cid = s.get(Job, job_ids[0]).candidate_id  # type: ignore[union-attr]
    return sid, cid


def test_promotion_persists_one_job_per_start_once(migrated: Database) -> None:
    sid, cid = screened(migrated, {"top_k": 1, "tuning_start": "multi"})  # starts: the default, 3
    with migrated.session() as s:
        study = study_store.study_by_id(s, sid)
        assert study is not None and study.policy.starts == 3
        jobs, new = promotion.promote(s, study, [cid], tuner="fd2", max_attempts=2)
    assert [j.seed for j in jobs] == [0, 1, 2] and [j.id for j in new] == [j.id for j in jobs]
    assert [j.config["start"] for j in jobs] == ["p50", "p25", "p75"]
    assert {j.config["train_seed"] for j in jobs} == {0}
    assert [round(j.config["init_lr"], 9) for j in jobs] == [0.1, 0.01, 1.0]
    with migrated.session() as s:
        study = study_store.study_by_id(s, sid)
        assert study is not None
        for starts in (None, 1, 3):  # again, with any starts: the same jobs, none added
            again, new = promotion.promote(s, study, [cid], tuner="fd2", max_attempts=2, starts=starts)
            assert [j.id for j in again] == [j.id for j in jobs] and new == []
        assert [j.id for j in ranking.tuning_jobs_of(s, [cid])[cid]] == [j.id for j in jobs]


def test_one_start_is_the_single_job_of_before(migrated: Database) -> None:
    sid, cid = screened(migrated, {"top_k": 1, "starts": 1, "tuning_start": "multi"})
    with migrated.session() as s:
        study = study_store.study_by_id(s, sid)
        assert study is not None
        jobs, _ = promotion.promote(s, study, [cid], tuner="fd2", max_attempts=2)
    assert len(jobs) == 1 and jobs[0].seed == 0
    assert jobs[0].config.keys() == {"tuner", "init_lr"} and abs(jobs[0].config["init_lr"] - 0.1) < 1e-12


def test_class_balanced_metrics_pick_the_start_by_their_validation_side() -> None:
    assert [ranking.selection_metric(m) for m in ("test_macro_f1", "val_balanced_accuracy", "estimate")] == [
        "val_macro_f1",
        "val_balanced_accuracy",
        "val_loss",
    ]
    # p50 has the better accuracy, p25 the better macro-F1 on validation: ranked by test macro-F1,
    # the answer is p25, reported on the test side
    p50 = job(
        10,
        seed=0,
        start="p50",
        result={**scores(0.2, 0.9, 0.2, 0.9), "val_macro_f1": 0.5, "test_macro_f1": 0.6},
    )
    p25 = job(
        11,
        seed=1,
        start="p25",
        result={**scores(0.3, 0.8, 0.3, 0.8), "val_macro_f1": 0.7, "test_macro_f1": 0.4},
    )
    screen = job(1, "screen", result={**(SCREEN.result or {}), "test_macro_f1": 0.5})
    r = ranking.rank(CAND, [screen, p50, p25], "test_macro_f1")[0][0]
    assert (r.tuning_job_id, r.tuned_score) == (11, 0.4)
    # the screening result (SCREEN) was stored before the metric existed: not ranked, no error
    ranked, unranked = ranking.rank(CAND, [SCREEN, p50, p25], "val_macro_f1")
    assert ranked == [] and [u.candidate_id for u in unranked] == [1] and unranked[0].state == "succeeded"


def _asha_run(cid: int, state: str, val_loss: float, rung: int | None) -> JobRecord:
    from dataclasses import replace

    j = job(100 + cid, "screen", state=state, result={"val_loss": val_loss, "val_accuracy": 0.5})
    return replace(j, candidate_id=cid, config={} if rung is None else {"target_epochs": rung})


def test_asha_runs_rank_by_rung_reached_then_score_and_tie_only_within_a_rung() -> None:
    """A run stopped after 1 epoch with a low loss must not outrank a completed 9-epoch run."""
    cands = [CandidateBrief(id=i, study_id=1, name=f"c{i}", num_params=1) for i in range(1, 6)]
    jobs = [
        _asha_run(1, "stopped", 0.10, 1),  # best loss, but stopped at rung 1
        _asha_run(2, "succeeded", 0.90, 9),  # completed
        _asha_run(3, "stopped", 0.50, 3),
        _asha_run(4, "stopped", 0.40, 3),
        _asha_run(5, "paused", 0.05, 1),  # the search is still going: unranked
    ]
    ranked, unranked = ranking.rank(cands, jobs, "val_loss")
    assert [(r.candidate_id, r.rung_epochs) for r in ranked] == [(2, 9), (4, 3), (3, 3), (1, 1)]
    assert [(r.candidate_id, r.state) for r in unranked] == [(5, "paused")]
    assert all(r.tied_with == [] for r in ranked)  # 0.10 vs 0.90 etc.: different rungs never tie
    # without ASHA (no target_epochs) the order is the score's alone, as before
    plain = [_asha_run(1, "succeeded", 0.10, None), _asha_run(2, "succeeded", 0.90, None)]
    ranked, _ = ranking.rank(cands[:2], plain, "val_loss")
    assert [(r.candidate_id, r.rung_epochs) for r in ranked] == [(1, None), (2, None)]


def test_candidate_state_names_paused_and_stopped() -> None:
    assert ranking.candidate_state([_asha_run(1, "paused", 1.0, 1)]) == "paused"
    assert ranking.candidate_state([_asha_run(1, "stopped", 1.0, 1)]) == "stopped"
    assert (
        ranking.candidate_state([_asha_run(1, "running", 1.0, 3), _asha_run(1, "paused", 1.0, 1)])
        == "running"
    )

"""The job life cycle in the database: compare-and-set claims, leases, the reaper, cancel."""

from __future__ import annotations

import threading
from datetime import timedelta

from archscreen.store import Database, Job, Study, ranking, utcnow
from archscreen.store import jobs as job_store
from archscreen.store import studies as study_store
from archscreen.store.auth import create_token, get_or_create_tenant, tenant_for_token
from archscreen.worker import promotion

SCREENING = {"max_epochs": 3, "patience": 2, "batch_size": 32, "seeds": [0, 1], "base": "sgd"}


def make_study(db: Database, name: str = "s", policy: dict | None = None) -> int:
    with db.session() as s:
        tenant = get_or_create_tenant(s, "acme")
        study = study_store.create_study(
            s, tenant.id, name=name, dataset="mnist1d", screening=SCREENING, policy=policy or {"top_k": 1}
        )
        return study.id


def add(db: Database, study_id: int, h: str = "h1") -> list[int]:
    with db.session() as s:
        study = study_store.get_study(s, get_or_create_tenant(s, "acme").id, study_id)
        assert study is not None
        _, _created, jobs = study_store.add_candidate(
            s, study, name=h, spec={"layers": []}, spec_hash=h, num_params=1, summary=[], max_attempts=2
        )
        return [j.id for j in jobs]


def test_tokens_are_hashed_and_resolve(migrated: Database) -> None:
    with migrated.session() as s:
        token = create_token(s, "acme", "ci")
    with migrated.session() as s:
        from archscreen.store import ApiToken

        stored = s.query(ApiToken).one()
        assert token not in (stored.token_hash, stored.prefix + "x")
        assert len(stored.token_hash) == 64
        tenant = tenant_for_token(s, token)
        assert tenant is not None and tenant.name == "acme"
        assert tenant_for_token(s, token + "x") is None


def test_same_spec_twice_returns_the_existing_candidate(migrated: Database) -> None:
    sid = make_study(migrated)
    first = add(migrated, sid, "same")
    assert len(first) == 2  # one screening run per seed
    assert add(migrated, sid, "same") == []


def test_claim_is_exclusive_and_only_the_owner_finishes(migrated: Database) -> None:
    sid = make_study(migrated)
    job_id = add(migrated, sid)[0]
    with migrated.session() as s:
        assert job_store.claim(s, job_id, "w1", 30) is not None
    with migrated.session() as s:
        assert job_store.claim(s, job_id, "w2", 30) is None  # a second delivery is a no-op
        assert not job_store.finish(s, job_id, "w2", "succeeded", result={"val_loss": 1.0})
        assert job_store.finish(s, job_id, "w1", "succeeded", result={"val_loss": 1.0})
        assert not job_store.finish(s, job_id, "w1", "failed")  # final states are final
    with migrated.session() as s:
        job = s.get(Job, job_id)
        assert (
            job is not None
            and job.state == "succeeded"
            and job.attempts == 1
            and job.result == {"val_loss": 1.0}
        )


def test_concurrent_claims_have_one_winner(migrated: Database) -> None:
    sid = make_study(migrated)
    job_id = add(migrated, sid)[0]
    wins: list[str] = []
    barrier = threading.Barrier(8)

    def racer(name: str) -> None:
        barrier.wait()
        with migrated.session() as s:
            if job_store.claim(s, job_id, name, 30) is not None:
                wins.append(name)

    threads = [threading.Thread(target=racer, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1


def test_heartbeat_extends_the_lease_and_reports_cancel(migrated: Database) -> None:
    sid = make_study(migrated)
    job_id = add(migrated, sid)[0]
    with migrated.session() as s:
        job_store.claim(s, job_id, "w1", 1)
    with migrated.session() as s:
        hb = job_store.heartbeat(s, job_id, "w1", 600)
        assert hb.owned and not hb.cancel_requested
        assert job_store.heartbeat(s, job_id, "other", 600).owned is False
    with migrated.session() as s:
        assert job_store.request_cancel(s, job_id) == "running"  # running jobs stop at their next step
    with migrated.session() as s:
        assert job_store.heartbeat(s, job_id, "w1", 600).cancel_requested
        assert job_store.reap(s, now=utcnow() + timedelta(seconds=60)) == []  # lease renewed to 600 s


def test_cancel_of_a_queued_job_is_immediate_and_sticks(migrated: Database) -> None:
    sid = make_study(migrated)
    job_id = add(migrated, sid)[0]
    with migrated.session() as s:
        assert job_store.request_cancel(s, job_id) == "cancelled"
    with migrated.session() as s:
        assert job_store.claim(s, job_id, "w1", 30) is None


def test_reaper_requeues_then_fails_after_max_attempts(migrated: Database) -> None:
    sid = make_study(migrated)
    job_id = add(migrated, sid)[0]  # max_attempts=2
    later = utcnow() + timedelta(seconds=120)
    for attempt in (1, 2):
        with migrated.session() as s:
            assert job_store.claim(s, job_id, f"w{attempt}", 5) is not None
        with migrated.session() as s:
            requeued = job_store.reap(s, now=later)
        with migrated.session() as s:
            job = s.get(Job, job_id)
            assert job is not None
            if attempt == 1:
                assert requeued == [job_id] and job.state == "queued" and job.enqueued_at is None
                assert (job_id, "screen") in job_store.unsent(s)
            else:
                assert requeued == [] and job.state == "failed" and "lease expired" in (job.error or "")
    with migrated.session() as s:  # the dead worker cannot write a result afterwards
        assert not job_store.finish(s, job_id, "w2", "succeeded")


def test_record_epoch_upserts_and_needs_the_lease(migrated: Database) -> None:
    sid = make_study(migrated)
    job_id = add(migrated, sid)[0]
    with migrated.session() as s:
        job_store.claim(s, job_id, "w1", 30)
    kw = dict(
        max_epochs=3, elapsed_s=1.0, train_loss=1.0, val_loss=float("nan"), val_accuracy=0.5, seconds=1.0
    )
    with migrated.session() as s:
        assert job_store.record_epoch(s, job_id, "w1", epoch=1, extra={}, **kw)
        assert job_store.record_epoch(s, job_id, "w1", epoch=1, extra={"again": 1}, **kw)  # resumed: rewrite
        assert not job_store.record_epoch(s, job_id, "w2", epoch=2, extra={}, **kw)
    with migrated.session() as s:
        rows = study_store.metrics_of(s, [job_id])[job_id]
        assert [(m.epoch, m.val_loss, m.extra) for m in rows] == [(1, None, {"again": 1})]


def test_auto_promotion_claim_fires_once(migrated: Database) -> None:
    sid = make_study(migrated, policy={"top_k": 1, "auto": True})
    results = []
    barrier = threading.Barrier(6)

    def racer() -> None:
        barrier.wait()
        with migrated.session() as s:
            results.append(ranking.claim_auto_promotion(s, sid))

    threads = [threading.Thread(target=racer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]


def test_reaper_ends_a_cancelled_job_whose_worker_died(migrated: Database) -> None:
    sid = make_study(migrated)
    job_id = add(migrated, sid)[0]
    with migrated.session() as s:
        job_store.claim(s, job_id, "w1", 5)
    with migrated.session() as s:
        assert job_store.request_cancel(s, job_id) == "running"
    with migrated.session() as s:
        assert job_store.reap(s, now=utcnow() + timedelta(seconds=60)) == []
    with migrated.session() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.state == "cancelled"


def test_lost_messages_are_resent_only_when_the_broker_queue_is_empty(migrated: Database) -> None:
    sid = make_study(migrated)
    ids = add(migrated, sid)
    with migrated.session() as s:
        job_store.mark_enqueued(s, ids)
        s.query(Job).filter(Job.id == ids[0]).update({"enqueued_at": utcnow() - timedelta(minutes=5)})
    with migrated.session() as s:
        assert job_store.lost_messages(s, queue_length=3) == []
        assert job_store.lost_messages(s, queue_length=None) == []
        assert job_store.lost_messages(s, queue_length=0) == [(ids[0], "screen")]  # ids[1] was sent just now
    with migrated.session() as s:
        assert job_store.lost_messages(s, queue_length=0) == []  # re-sent once, not every pass


def test_concurrent_promotions_of_one_candidate_make_one_job_per_start(migrated: Database) -> None:
    sid = make_study(migrated, policy={"top_k": 1, "tuning_start": "multi"})  # 3 quartile starts
    job_ids = add(migrated, sid)
    posterior = [{"lr": 0.01, "weight": 0.5}, {"lr": 1.0, "weight": 0.5}]  # 3 distinct quartiles
    result = {"val_loss": 1.0, "switch_posterior": posterior, "lr_range": [1e-5, 10]}
    for i, job_id in enumerate(job_ids):
        with migrated.session() as s:
            job_store.claim(s, job_id, f"w{i}", 30)
        with migrated.session() as s:
            job_store.finish(s, job_id, f"w{i}", "succeeded", result=result)
    with migrated.session() as s:
        cid = s.get(Job, job_ids[0]).candidate_id  # type: ignore[union-attr]
    made: list[tuple[int, ...]] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def racer() -> None:
        barrier.wait()
        try:
            with migrated.session() as s:
                study = study_store.study_by_id(s, sid)
                assert study is not None
                jobs, _ = promotion.promote(s, study, [cid], tuner="fd2", max_attempts=2)
                made.append(tuple(j.id for j in jobs))
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    threads = [threading.Thread(target=racer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(made)) == 1 and len(made[0]) == 3
    with migrated.session() as s:
        assert s.query(Job).filter_by(candidate_id=cid, kind="tune").count() == 3


def test_auto_promotion_after_a_cancel_ends_screening(migrated: Database, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from archscreen.settings import Settings
    from archscreen.worker.promotion import after_screening_finished

    sid = make_study(migrated, policy={"top_k": 2, "auto": True, "tuner": "fd2"})
    a = add(migrated, sid, "a")
    b = add(migrated, sid, "b")
    result = {"val_loss": 1.0, "switch_posterior": [{"lr": 0.1, "weight": 1.0}], "lr_range": [1e-5, 10]}
    for job_id in a:
        with migrated.session() as s:
            job_store.claim(s, job_id, "w", 30)
        with migrated.session() as s:
            job_store.finish(s, job_id, "w", "succeeded", result=result)
    with migrated.session() as s:
        assert ranking.studies_awaiting_auto_promotion(s) == []  # b is still queued
        for job_id in b:
            job_store.request_cancel(s, job_id)
    with migrated.session() as s:
        assert ranking.studies_awaiting_auto_promotion(s) == [sid]
        version = s.get(Study, sid).version  # type: ignore[union-attr]
    settings = Settings(data_dir=tmp_path, database_url=migrated.url)
    settings.ensure_dirs()
    new = after_screening_finished(migrated, settings, sid)
    assert len(new) == 1  # only a is promotable: b was cancelled
    assert after_screening_finished(migrated, settings, sid) == []  # once
    with migrated.session() as s:
        assert ranking.studies_awaiting_auto_promotion(s) == []
        assert s.get(Study, sid).version > version  # type: ignore[union-attr]


def test_a_promotion_check_is_due_once_per_study_and_only_where_it_can_promote(migrated: Database) -> None:
    manual = make_study(migrated, "manual")
    auto = make_study(migrated, "auto", policy={"top_k": 1, "auto": True})
    jobs = {sid: add(migrated, sid) for sid in (manual, auto)}
    with migrated.session() as s:
        for job_id in jobs[manual]:
            job_store.request_cancel(s, job_id)
        job_store.request_cancel(s, jobs[auto][0])
    with migrated.session() as s:
        assert not promotion.check_due(s, manual, 30)  # auto off: nothing could promote
        assert not promotion.check_due(s, auto, 30)  # a screening run is still queued
        job_store.request_cancel(s, jobs[auto][1])
    with migrated.session() as s:
        assert promotion.check_due(s, auto, 30)
    with migrated.session() as s:
        assert not promotion.check_due(s, auto, 30)  # sent: not again within the window
        # once the window has passed (the message may be lost) it is due again
        s.query(Study).filter_by(id=auto).update({"promotion_check_at": utcnow() - timedelta(seconds=31)})
        assert promotion.check_due(s, auto, 30)
        s.query(Study).filter_by(id=auto).update({"promotion_check_at": None})
        assert ranking.claim_auto_promotion(s, auto)
        assert not promotion.check_due(s, auto, 30)  # promoted: never again


def test_queued_of_names_the_jobs_no_process_claimed(migrated: Database) -> None:
    sid = make_study(migrated)
    queued, claimed = add(migrated, sid)
    with migrated.session() as s:
        assert job_store.claim(s, claimed, "w", 30) is not None
    with migrated.session() as s:
        assert job_store.queued_of(s, [queued, claimed]) == [(queued, "screen")]
        assert job_store.queued_of(s, []) == []


def test_an_asha_run_pauses_resumes_for_its_next_rung_and_stops(migrated: Database) -> None:
    """paused: only by the lease owner, not final, not claimable; a promotion queues it again with
    the next rung's epochs and fresh attempts; the end of the search stops it (final)."""
    from archscreen.store import Job

    sid = make_study(migrated)
    a, b = add(migrated, sid, "a")[0], add(migrated, sid, "b")[0]
    with migrated.session() as s:
        assert job_store.set_target(s, [a, b], 1) == []  # queued: only the target is recorded
        assert job_store.claim(s, a, "w1", 30) is not None
        assert job_store.claim(s, b, "w1", 30) is not None
        assert not job_store.pause(s, a, "w2", result={"asha": {"epochs": 1}})  # not the owner
        assert job_store.pause(s, a, "w1", result={"asha": {"epochs": 1, "value": 0.5}})
        assert job_store.pause(s, b, "w1", result={"asha": {"epochs": 1, "value": 0.7}})
    with migrated.session() as s:
        assert s.get(Job, a).state == "paused" and s.get(Job, a).lease_owner is None  # type: ignore[union-attr]
        assert not job_store.claimable(s, a)
        assert job_store.set_target(s, [a], 3) == [a]
    with migrated.session() as s:
        job = s.get(Job, a)
        assert job is not None and (job.state, job.attempts, job.config["target_epochs"]) == ("queued", 0, 3)
        assert job.enqueued_at is None and (a, "screen") in job_store.unsent(s)  # the sweep sends it
        job_store.stop_paused(s, [a, b])  # a is queued again: only b stops
    with migrated.session() as s:
        assert (s.get(Job, a).state, s.get(Job, b).state) == ("queued", "stopped")  # type: ignore[union-attr]
        assert s.get(Job, b).finished_at is not None  # type: ignore[union-attr]


def test_cancel_ends_a_paused_run_at_once(migrated: Database) -> None:
    sid = make_study(migrated)
    a = add(migrated, sid, "a")[0]
    with migrated.session() as s:
        job_store.claim(s, a, "w1", 30)
        job_store.pause(s, a, "w1", result={})
    with migrated.session() as s:
        assert job_store.request_cancel(s, a) == "cancelled"
        assert job_store.set_target(s, [a], 3) == []  # a promotion finds it ended: nothing resumes

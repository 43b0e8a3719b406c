"""store/ hands out frozen records with the study's config re-hydrated as the typed models."""

from __future__ import annotations

import dataclasses
import random

import pytest
from pydantic import ValidationError

from archscreen.config import PromotionPolicy, ScreeningConfig
from archscreen.store import Database, ranking
from archscreen.store import jobs as job_store
from archscreen.store import studies as study_store
from archscreen.store.auth import get_or_create_tenant
from archscreen.store.ranking import RankRow, _mark_ties, _tied
from archscreen.store.records import CandidateBrief, JobRecord, StudyRecord


def test_a_stored_config_comes_back_typed_with_the_products_defaults(migrated: Database) -> None:
    with migrated.session() as s:
        tenant = get_or_create_tenant(s, "acme")
        made = study_store.create_study(
            s, tenant.id, name="s", dataset="mnist1d", screening={"max_epochs": 3, "base": "sgd"}, policy={}
        )
    with migrated.session() as s:
        study = study_store.get_study(s, tenant.id, made.id)
    assert isinstance(study, StudyRecord)
    assert isinstance(study.screening, ScreeningConfig) and isinstance(study.policy, PromotionPolicy)
    # what was not given is the models' default, defined once in archscreen/config.py
    assert study.screening == ScreeningConfig(max_epochs=3, base="sgd")
    assert (study.screening.patience, study.screening.seeds, study.policy.metric) == (10, [0], "val_loss")
    with pytest.raises(dataclasses.FrozenInstanceError):
        study.name = "renamed"  # type: ignore[misc]
    with migrated.session() as s:
        assert study_store.get_study(s, tenant.id + 1, made.id) is None  # another tenant's


def test_a_policy_stored_before_the_tuning_stage_fields_keeps_multi_start(migrated: Database) -> None:
    """New studies get core/defaults.py's TUNING (screen-weights); a row stored before the fields
    existed screened without keeping its weights, so it keeps the multi-start of its day."""
    from archscreen.store.models import Study

    with migrated.session() as s:
        tenant = get_or_create_tenant(s, "acme")
        new = study_store.create_study(s, tenant.id, name="new", dataset="mnist1d", screening={}, policy={})
        old = study_store.create_study(s, tenant.id, name="old", dataset="mnist1d", screening={}, policy={})
        row = s.get(Study, old.id)
        assert row is not None and row.policy["tuning_start"] == "screen-weights"
        row.policy = {k: v for k, v in row.policy.items() if k not in ("tuning_start", "halving")}
    with migrated.session() as s:
        got_new = study_store.get_study(s, tenant.id, new.id)
        got_old = study_store.get_study(s, tenant.id, old.id)
    assert got_new is not None and got_old is not None
    assert (got_new.policy.tuning_start, got_new.policy.halving) == ("screen-weights", False)
    assert (got_old.policy.tuning_start, got_old.policy.halving) == ("multi", False)


def test_the_store_refuses_a_config_the_api_would_refuse(migrated: Database) -> None:
    with migrated.session() as s:
        tenant = get_or_create_tenant(s, "acme")
        with pytest.raises(ValidationError, match="max_epochs"):
            study_store.create_study(
                s, tenant.id, name="bad", dataset="mnist1d", screening={"max_epochs": 0}, policy={}
            )


def test_jobs_and_rows_are_records_with_typed_states(migrated: Database) -> None:
    with migrated.session() as s:
        tenant = get_or_create_tenant(s, "acme")
        study = study_store.create_study(
            s, tenant.id, name="s", dataset="mnist1d", screening={"seeds": [0, 1]}, policy={}
        )
        cand, created, jobs = study_store.add_candidate(
            s, study, name="c", spec={"layers": []}, spec_hash="h", num_params=3, summary=[], max_attempts=2
        )
    assert created and [j.seed for j in jobs] == [0, 1] and all(isinstance(j, JobRecord) for j in jobs)
    with migrated.session() as s:
        claimed = job_store.claim(s, jobs[0].id, "w", 30)
    assert claimed is not None and claimed.state == "running" and claimed.attempts == 1
    with migrated.session() as s:
        briefs, rows = study_store.study_rows(s, study.id)
        runs = study_store.jobs_of(s, [cand.id], kind="screen")[cand.id]
        job = study_store.get_job(s, tenant.id, jobs[1].id)
        assert study_store.get_job(s, tenant.id, jobs[1].id, kind="tune") is None
        assert study_store.candidate_spec(s, cand.id) == {"layers": []}
    assert briefs == [CandidateBrief(id=cand.id, study_id=study.id, name="c", num_params=3)]
    assert [(j.id, j.state) for j in rows] == [(jobs[0].id, "running"), (jobs[1].id, "queued")]
    assert runs == rows and job == rows[1]
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.state = "failed"  # type: ignore[misc]


@pytest.mark.parametrize("seed", range(5))
def test_the_tie_sweep_finds_exactly_the_pairs_the_rule_ties(seed: int) -> None:
    rng = random.Random(seed)
    rows = []
    for i in range(60):
        std = rng.choice([None, 0.0, rng.uniform(0, 0.05), rng.uniform(0, 0.3)])
        score = round(rng.uniform(0, 2), rng.choice([1, 2, 6]))  # rounded: equal scores happen
        rows.append(RankRow(candidate_id=i, name=str(i), state="succeeded", score=score, score_std=std))
    rows.sort(key=lambda r: (r.score or 0.0, r.candidate_id))
    for k, r in enumerate(rows):
        r.rank = k + 1
    _mark_ties(rows)
    for a in rows:  # the rule, pair by pair, in ranking order
        assert a.tied_with == [b.candidate_id for b in rows if b is not a and _tied(a, b)]


def test_rank_reads_records(migrated: Database) -> None:
    with migrated.session() as s:
        tenant = get_or_create_tenant(s, "acme")
        study = study_store.create_study(s, tenant.id, name="s", dataset="mnist1d", screening={}, policy={})
        ids = []
        for h, loss in (("a", 0.9), ("b", 0.4)):
            cand, _, (job,) = study_store.add_candidate(
                s, study, name=h, spec={}, spec_hash=h, num_params=1, summary=[], max_attempts=2
            )
            ids.append(cand.id)
            job_store.claim(s, job.id, "w", 30)
            assert job_store.finish(
                s, job.id, "w", "succeeded", result={"val_loss": loss, "preferred_lr": 0.1}
            )
    with migrated.session() as s:
        ranked, unranked = ranking.rank_study(s, study.id, "val_loss")
    assert [r.candidate_id for r in ranked] == ids[::-1] and unranked == []
    assert ranked[0].preferred_lr == pytest.approx(0.1) and ranked[0].to_dict()["rank"] == 1

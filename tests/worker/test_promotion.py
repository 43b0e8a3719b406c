"""The promotion rule (worker/promotion.py): which tuner, which starting rate, who is left out."""

from __future__ import annotations

from datetime import datetime

import pytest

from archscreen.config import PromotionPolicy, ScreeningConfig, default_tuner
from archscreen.store.records import JobRecord, StudyRecord
from archscreen.worker.promotion import choose_tuner, decide

POSTERIOR = [{"lr": 0.01, "weight": 0.5}, {"lr": 1.0, "weight": 0.5}]  # geometric mean 0.1


def study(base: str = "sgd", tuner: str | None = None) -> StudyRecord:
    return StudyRecord(
        id=1,
        tenant_id=1,
        name="s",
        dataset="mnist1d",
        screening=ScreeningConfig.model_validate({"base": base}),
        policy=PromotionPolicy.model_validate({"tuner": tuner}),
        created_at=datetime(2026, 1, 1),
        auto_promoted_at=None,
        version=0,
    )


def run(job_id: int, candidate_id: int, state: str = "succeeded", lr: float | None = 0.1) -> JobRecord:
    result = {"switch_posterior": POSTERIOR, "lr_range": [1e-5, 10.0]} if lr is not None else None
    return JobRecord(
        id=job_id,
        kind="screen",
        study_id=1,
        candidate_id=candidate_id,
        seed=job_id,
        state=state,  # type: ignore[arg-type]
        attempts=1,
        max_attempts=3,
        cancel_requested=False,
        error=None,
        config={},
        result=result,
        epoch=1,
        max_epochs=1,
        elapsed_s=1.0,
        created_at=datetime(2026, 1, 1),
        started_at=None,
        finished_at=None,
    )


def test_the_tuner_is_the_requests_then_the_policys_then_the_default_for_the_base() -> None:
    assert choose_tuner(study("adam", "fd2"), "salera") == "salera"
    assert choose_tuner(study("adam", "fd2")) == "fd2"
    assert choose_tuner(study("adam")) == default_tuner("adam")
    assert choose_tuner(study("sgd")) == default_tuner("sgd") == "fd2"


def test_a_posterior_on_the_tuners_scale_is_the_start_else_the_tuners_default() -> None:
    runs = {7: [run(1, 7), run(2, 7, state="failed")]}
    assert decide(study("sgd"), runs, "fd2") == {7: {"tuner": "fd2", "init_lr": pytest.approx(0.1)}}
    # Alrao-Adam's rates are not SGD rates: fd2 starts from its own default, and says so
    assert decide(study("adam"), runs, "fd2") == {
        7: {"tuner": "fd2", "init_lr": 0.01, "init_lr_source": "tuner_default"}
    }


def test_a_candidate_without_a_succeeded_run_is_refused_or_left_out() -> None:
    runs = {7: [run(1, 7)], 8: [run(2, 8, state="failed", lr=None)]}
    with pytest.raises(ValueError, match="candidate 8 has no successful screening run"):
        decide(study("sgd"), runs, "fd2")
    assert list(decide(study("sgd"), runs, "fd2", skip_unpromotable=True)) == [7]

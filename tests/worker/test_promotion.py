"""The promotion rule (worker/promotion.py): which tuner, which starting rate, who is left out."""

from __future__ import annotations

from datetime import datetime

import pytest

from archscreen.config import PromotionPolicy, ScreeningConfig, default_tuner
from archscreen.core.tuners.start import MULTI_START_QUANTILES
from archscreen.store.records import JobRecord, StudyRecord
from archscreen.worker.promotion import START_QUANTILES, choose_tuner, decide, start_label

POSTERIOR = [{"lr": 0.01, "weight": 0.5}, {"lr": 1.0, "weight": 0.5}]  # geometric mean 0.1


def study(base: str = "sgd", tuner: str | None = None, starts: int = 1, **policy: object) -> StudyRecord:
    return StudyRecord(
        id=1,
        tenant_id=1,
        name="s",
        dataset="mnist1d",
        screening=ScreeningConfig.model_validate({"base": base}),
        policy=PromotionPolicy.model_validate(
            {"tuner": tuner, "starts": starts, "tuning_start": "multi", **policy}
        ),
        created_at=datetime(2026, 1, 1),
        auto_promoted_at=None,
        version=0,
    )


def run(
    job_id: int,
    candidate_id: int,
    state: str = "succeeded",
    lr: float | None = 0.1,
    posterior: list[dict[str, float]] = POSTERIOR,
    lr_range: tuple[float, float] = (1e-5, 10.0),
) -> JobRecord:
    result = {"switch_posterior": posterior, "lr_range": list(lr_range)} if lr is not None else None
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
    assert decide(study("sgd"), runs, "fd2") == {7: {0: {"tuner": "fd2", "init_lr": pytest.approx(0.1)}}}
    # Alrao-Adam's rates are not SGD rates: fd2 starts from its own default, and says so; one job
    # whatever the starts (three copies of one default rate would train the same run)
    for starts in (1, 3):
        assert decide(study("adam", starts=starts), runs, "fd2") == {
            7: {0: {"tuner": "fd2", "init_lr": 0.01, "init_lr_source": "tuner_default"}}
        }


def test_a_candidate_without_a_succeeded_run_is_refused_or_left_out() -> None:
    runs = {7: [run(1, 7)], 8: [run(2, 8, state="failed", lr=None)]}
    with pytest.raises(ValueError, match="candidate 8 has no successful screening run"):
        decide(study("sgd"), runs, "fd2")
    assert list(decide(study("sgd"), runs, "fd2", skip_unpromotable=True)) == [7]
    with pytest.raises(ValueError, match="candidate 8"):
        decide(study("sgd", starts=3), runs, "fd2")


def test_the_start_order_is_cores_quartiles_median_first() -> None:
    assert sorted(START_QUANTILES) == sorted(MULTI_START_QUANTILES)
    assert START_QUANTILES[0] == 0.5 and [start_label(q) for q in START_QUANTILES] == ["p50", "p25", "p75"]


def start(seed: int, q: float, lr: float) -> tuple[int, dict[str, object]]:
    label = {0.5: "p50", 0.25: "p25", 0.75: "p75"}[q]
    config = {
        "tuner": "fd2",
        "init_lr": pytest.approx(lr),
        "start": label,
        "start_quantile": q,
        "train_seed": 0,
    }
    return seed, config


def test_three_starts_are_the_posteriors_quartiles_one_job_each_with_one_training_seed() -> None:
    # POSTERIOR is half on 0.01, half on 1.0 (log spacing 2 decades): each copy's weight spread over
    # its cell, the quartiles are the copies themselves and the median their geometric mean
    runs = {7: [run(1, 7)]}
    assert decide(study("sgd", starts=3), runs, "fd2") == {
        7: dict([start(0, 0.5, 0.1), start(1, 0.25, 0.01), start(2, 0.75, 1.0)])
    }
    # the policy's default, or the call's starts: 2 starts are the median, then the lower quartile
    assert decide(study("sgd"), runs, "fd2", starts=2) == {
        7: dict([start(0, 0.5, 0.1), start(1, 0.25, 0.01)])
    }
    # starts=1 is the single start of before: the posterior's weighted geometric mean, nothing else
    one = run(1, 7, posterior=[{"lr": 0.01, "weight": 0.9}, {"lr": 1.0, "weight": 0.1}])
    assert decide(study("sgd", starts=3), {7: [one]}, "fd2", starts=1) == {
        7: {0: {"tuner": "fd2", "init_lr": pytest.approx(10 ** (-2 * 0.9))}}
    }
    with pytest.raises(ValueError, match="starts must be between 1 and 3"):
        decide(study("sgd"), runs, "fd2", starts=4)


def test_each_start_is_the_geometric_mean_over_the_succeeded_seeds_and_equal_starts_are_made_once() -> None:
    other = [{"lr": 0.001, "weight": 0.5}, {"lr": 0.1, "weight": 0.5}]  # quartiles 0.001, 0.01, 0.1
    runs = {
        7: [
            run(1, 7),
            run(2, 7, posterior=other),
            run(3, 7, state="diverged", posterior=[{"lr": 9.0, "weight": 1.0}]),
        ]
    }
    got = decide(study("sgd", starts=3), runs, "fd2")[7]
    assert {s: c["init_lr"] for s, c in got.items()} == {
        0: pytest.approx((0.1 * 0.01) ** 0.5),
        1: pytest.approx((0.01 * 0.001) ** 0.5),
        2: pytest.approx((1.0 * 0.1) ** 0.5),
    }
    # a posterior on the range's top copy: the median and the upper quartile clip to the same rate,
    # so that start is made once (its seed stays the median's); the lower quartile keeps seed 1
    top = run(1, 7, posterior=[{"lr": 0.1, "weight": 0.0}, {"lr": 1.0, "weight": 1.0}], lr_range=(1e-3, 1.0))
    got = decide(study("sgd", starts=3), {7: [top]}, "fd2")[7]
    assert sorted(got) == [0, 1] and got[0]["init_lr"] == pytest.approx(1.0) and got[1]["start"] == "p25"
    assert got[1]["init_lr"] == pytest.approx(10**-0.25)


# ---------------------------------------------------------------- the tuning stage's options
# 10 copies over 3 decades (Alrao-Adam's range): one copy's spacing is a third of a decade
ADAM_RANGE = (1e-4, 0.1)


def _adam_posterior(weights: list[float]) -> list[dict[str, float]]:
    return [{"lr": 1e-4 * 1000 ** (j / 9), "weight": w} for j, w in enumerate(weights)]


NARROW = _adam_posterior([0, 0, 0, 0, 1.0, 0, 0, 0, 0, 0])
WIDE = _adam_posterior([0.1] * 10)


def test_the_default_policy_is_cores_tuning_default() -> None:
    from archscreen.core.defaults import TUNING

    policy = PromotionPolicy()
    assert (
        (policy.tuning_start, policy.halving) == (TUNING.start, TUNING.halving) == ("screen-weights", False)
    )


def test_posterior_width_makes_one_start_for_a_narrow_posterior_and_three_for_a_wide_one() -> None:
    s = study("adam", starts=3, tuning_start="posterior-width")
    narrow = decide(s, {7: [run(1, 7, posterior=NARROW, lr_range=ADAM_RANGE)]}, "fd2-adam")[7]
    assert list(narrow) == [0] and narrow[0]["start"] == "p50"
    wide = decide(s, {7: [run(1, 7, posterior=WIDE, lr_range=ADAM_RANGE)]}, "fd2-adam")[7]
    multi = decide(study("adam", starts=3), {7: [run(1, 7, posterior=WIDE, lr_range=ADAM_RANGE)]}, "fd2-adam")
    assert wide == multi[7] and [c["start"] for c in wide.values()] == ["p50", "p25", "p75"]
    # the widest succeeded run decides
    both = [run(1, 7, posterior=NARROW, lr_range=ADAM_RANGE), run(2, 7, posterior=WIDE, lr_range=ADAM_RANGE)]
    assert len(decide(s, {7: both}, "fd2-adam")[7]) == 3


def test_screen_weights_is_one_job_from_the_best_screening_run_and_its_heaviest_copy() -> None:
    s = study("adam", starts=3, tuning_start="screen-weights")
    a = run(1, 7, posterior=WIDE, lr_range=ADAM_RANGE)
    b = run(2, 7, posterior=NARROW, lr_range=ADAM_RANGE)
    assert a.result is not None and b.result is not None
    a.result["val_loss"], b.result["val_loss"] = 0.5, 0.3
    jobs = decide(s, {7: [a, b]}, "fd2-adam")[7]
    assert jobs == {
        0: {
            "tuner": "fd2-adam",
            "init_lr": pytest.approx(1e-4 * 1000 ** (4 / 9)),
            "start": "screen-weights",
            "init_from_job": 2,
            "init_copy": 4,
            "train_seed": 0,
        }
    }


def test_halving_is_one_job_over_the_quantile_starts() -> None:
    runs = {7: [run(1, 7, posterior=WIDE, lr_range=ADAM_RANGE)]}
    multi = decide(study("adam", starts=3), runs, "fd2-adam")[7]
    jobs = decide(study("adam", starts=3, halving=True), runs, "fd2-adam")[7]
    assert list(jobs) == [0] and jobs[0]["start"] == "halving"
    assert jobs[0]["halving_rates"] == [c["init_lr"] for c in multi.values()]
    sw = decide(study("adam", starts=3, halving=True, tuning_start="screen-weights"), runs, "fd2-adam")[7]
    assert sw[0]["start"] == "screen-weights+halving" and sw[0]["halving_rates"] == jobs[0]["halving_rates"]
    assert sw[0]["init_from_job"] == 1
    # a narrow posterior under posterior-width is one start: nothing to halve
    narrow = {7: [run(1, 7, posterior=NARROW, lr_range=ADAM_RANGE)]}
    one = decide(study("adam", starts=3, halving=True, tuning_start="posterior-width"), narrow, "fd2-adam")[7]
    assert list(one) == [0] and "halving_rates" not in one[0]

"""The learning-curve extrapolation behind ``ScreenResult.estimate`` (``core/estimate.py``)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from archscreen.core.estimate import METHODS, Estimate, estimate_for_curves, extrapolate

STEPS = [100.0 * (i + 1) for i in range(20)]


def _power_curve(a: float, b: float, c: float, noise: float = 0.0, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    t = np.array(STEPS) / STEPS[-1]
    return list(a - b * t ** (-c) + noise * rng.standard_normal(len(t)))


def test_power_law_recovers_the_asymptote_of_a_clean_curve() -> None:
    vals = _power_curve(0.9, 0.2, 0.7)
    est = extrapolate(STEPS, vals, higher_is_better=True, method="power-law")
    assert est.method == "power-law"
    assert est.value == pytest.approx(0.9, abs=0.01)
    assert est.value > max(vals)  # the curve is still rising: the asymptote lies above it
    assert est.low <= est.value <= est.high


def test_exp_saturation_reads_the_curve_at_a_horizon() -> None:
    t = np.array(STEPS) / STEPS[-1]
    vals = list(0.8 - 0.5 * np.exp(-2.0 * t))
    at_end = extrapolate(STEPS, vals, higher_is_better=True, method="exp-saturation", horizon=STEPS[-1])
    far = extrapolate(STEPS, vals, higher_is_better=True, method="exp-saturation", horizon=10 * STEPS[-1])
    assert at_end.value == pytest.approx(vals[-1], abs=1e-3)
    assert far.value == pytest.approx(0.8, abs=0.01)


def test_lower_is_better_metrics_extrapolate_downwards() -> None:
    loss = [-v for v in _power_curve(-0.3, 0.5, 0.5)]  # 0.3 + 0.5 t^-0.5, falling to 0.3
    est = extrapolate(STEPS, loss, higher_is_better=False, method="auto")
    assert est.value == pytest.approx(0.3, abs=0.02)
    assert est.value < min(loss)
    assert est.low <= est.value <= est.high


def test_interval_covers_the_truth_on_noisy_curves_most_of_the_time() -> None:
    hits = 0
    for seed in range(20):
        vals = _power_curve(0.9, 0.2, 0.7, noise=0.005, seed=seed)
        est = extrapolate(
            STEPS, vals, higher_is_better=True, method="power-law", horizon=STEPS[-1], seed=seed
        )
        truth = 0.9 - 0.2  # the noiseless curve at its last point (t = 1)
        hits += est.low <= truth <= est.high
        assert est.high > est.low  # noise gives the interval a width
    assert hits >= 12  # nominal 90%: loose, the test must not be flaky but must fail a broken interval


def test_never_worse_than_the_best_observed_point() -> None:
    # A curve that rises then falls (over-fitting): no fit may report below its best point.
    vals = [0.5, 0.7, 0.8, 0.85, 0.83, 0.8, 0.78, 0.75]
    for method in METHODS:
        est = extrapolate(STEPS[: len(vals)], vals, higher_is_better=True, method=method)
        assert est.value >= 0.85 - 1e-12


def test_bound_clips_value_and_interval() -> None:
    vals = _power_curve(1.3, 0.6, 0.7)  # heads past 1.0: an accuracy cannot
    est = extrapolate(STEPS, [min(v, 0.99) for v in vals], higher_is_better=True, best_possible=1.0)
    assert est.value <= 1.0 and est.high <= 1.0


def test_short_curve_falls_back_to_the_best_observed_score() -> None:
    est = extrapolate([10, 20, 30], [0.2, 0.5, 0.4], higher_is_better=True)
    assert est == Estimate(0.5, 0.5, 0.5, "best-observed (fallback)")


def test_best_observed_method_does_not_extrapolate() -> None:
    vals = _power_curve(0.9, 0.2, 0.7)
    est = extrapolate(STEPS, vals, higher_is_better=True, method="best-observed")
    assert est == Estimate(max(vals), max(vals), max(vals), "best-observed")


def test_skips_non_finite_points() -> None:
    vals: list[float | None] = [*_power_curve(0.9, 0.2, 0.7)]
    vals[3], vals[7] = None, math.nan
    est = extrapolate(STEPS, vals, higher_is_better=True, method="power-law")
    assert est.value == pytest.approx(0.9, abs=0.02)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "spline"}, "method must be one of"),
        ({"level": 1.5}, "level must be in"),
        ({"horizon": 0.0}, "horizon must be > 0"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        extrapolate(STEPS, _power_curve(0.9, 0.2, 0.7), higher_is_better=True, **kwargs)  # type: ignore[arg-type]


def test_mismatched_or_empty_curves_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        extrapolate([1, 2], [0.1], higher_is_better=True)
    with pytest.raises(ValueError, match="no finite point"):
        extrapolate([1, 2], [None, math.nan], higher_is_better=True)


def _records(values: list[float], key: str) -> list[dict[str, float | int | None]]:
    return [
        {"epoch": i + 1, "steps": 100, "val_loss": v if key == "val_loss" else 1.0, key: v}
        for i, v in enumerate(values)
    ]


def test_estimate_for_curves_uses_each_tasks_metric() -> None:
    acc = _power_curve(0.9, 0.2, 0.7)
    cls = estimate_for_curves(_records(acc, "val_accuracy"), "classification", method="power-law")
    assert cls is not None and cls.value == pytest.approx(0.9, abs=0.02)

    mse = [0.05 + 0.2 * (i + 1) ** -0.8 for i in range(20)]
    reg = estimate_for_curves(_records(mse, "val_mse"), "regression", method="power-law")
    assert reg is not None and reg.value < min(mse) and reg.value >= 0.0

    nats = [1.2 + 1.0 * (i + 1) ** -0.6 for i in range(20)]
    lm = estimate_for_curves(_records(nats, "val_loss"), "language_model", method="power-law")
    assert lm is not None and lm.value < min(nats) / math.log(2)  # in bits per character

    assert estimate_for_curves(_records([math.nan] * 5, "val_accuracy"), "classification") is None


def test_estimate_for_curves_reads_at_the_budgets_cap_by_default() -> None:
    t = np.arange(1, 11)
    acc = list(0.9 - 0.5 * np.exp(-0.3 * t))  # still rising after 10 epochs
    recs = _records(acc, "val_accuracy")
    at_cap = estimate_for_curves(recs, "classification", max_epochs=20)
    asymptote = estimate_for_curves(recs, "classification")
    assert at_cap is not None and asymptote is not None
    assert at_cap.method == "exp-saturation"
    assert at_cap.value == pytest.approx(0.9 - 0.5 * math.exp(-0.3 * 20), abs=0.01)
    assert acc[-1] < at_cap.value < asymptote.value == pytest.approx(0.9, abs=0.01)


def test_screen_result_carries_the_estimate() -> None:
    from archscreen.core.screening import AlraoScreener
    from archscreen.core.training.loop import TrainConfig

    spec = {"name": "mlp", "head": "classifier", "layers": ["flatten", {"linear": 16}, "relu"]}
    cfg = TrainConfig(max_epochs=5, patience=5, max_steps_per_epoch=10)
    res = AlraoScreener().screen(spec, "digits", cfg)
    assert res.estimate is not None and set(res.estimate) == {"value", "low", "high", "method"}
    best_acc = max(c["val_accuracy"] for c in res.curves)
    assert res.estimate["low"] <= res.estimate["value"] <= res.estimate["high"] <= 1.0
    assert res.estimate["value"] >= best_acc
    assert res.to_dict()["estimate"] == res.estimate

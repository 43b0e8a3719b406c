"""Starting a tuning from a screening: the posterior's quantiles and the multi-start rates."""

from __future__ import annotations

import math

import pytest

from archscreen.core.names import DEFAULT_SCREENING_BASE, TUNER_NAMES, default_tuner_for
from archscreen.core.screening import AlraoScreener
from archscreen.core.tuners.start import posterior_quantile, posterior_starts
from archscreen.core.tuning import get_tuner, initial_lr_from_screen, posterior_fits_tuner

RATES = [1e-4, 1e-3, 1e-2, 1e-1]  # one decade per copy


def post(*weights: float) -> list[dict[str, float]]:
    return [{"lr": lr, "weight": w} for lr, w in zip(RATES, weights, strict=True)]


def test_quantiles_on_one_copy_spread_over_its_cell() -> None:
    p = post(0, 1, 0, 0)
    assert posterior_quantile(p, 0.5) == pytest.approx(1e-3)
    # the cell is [10^-3.5, 10^-2.5]: the quartiles are a quarter decade either side
    assert posterior_quantile(p, 0.25) == pytest.approx(10**-3.25)
    assert posterior_quantile(p, 0.75) == pytest.approx(10**-2.75)
    assert posterior_starts(p) == pytest.approx([10**-3.25, 1e-3, 10**-2.75])


def test_median_of_two_equal_adjacent_copies_is_their_geometric_mean() -> None:
    p = post(0, 0.5, 0.5, 0)
    assert posterior_quantile(p, 0.5) == pytest.approx(math.sqrt(1e-3 * 1e-2))
    starts = posterior_starts(p)
    assert starts == sorted(starts) and len(starts) == 3


def test_quantiles_are_monotone_and_starts_clipped_to_the_range() -> None:
    p = post(0.1, 0.2, 0.3, 0.4)
    qs = [posterior_quantile(p, q) for q in (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)]
    assert qs == sorted(qs)
    # the top cell reaches half a decade above 0.1; the default range stops at the copies' rates
    assert posterior_starts(p, quantiles=(0.99,)) == [pytest.approx(0.1)]
    assert posterior_starts(p, quantiles=(0.5,), lr_range=(1e-4, 1e-3)) == [pytest.approx(1e-3)]
    assert posterior_starts(p, quantiles=(0.9, 0.95)) == [pytest.approx(0.1)]  # equal starts once


def test_without_a_posterior() -> None:
    assert posterior_starts({"switch_posterior": None, "preferred_lr": 0.02}) == [0.02]
    with pytest.raises(ValueError, match="no Switch posterior"):
        posterior_quantile({"switch_posterior": None}, 0.5)
    with pytest.raises(ValueError, match=r"not in \[0, 1\]"):
        posterior_quantile(post(1, 0, 0, 0), 1.5)
    with pytest.raises(ValueError, match="weights"):
        posterior_starts(post(0, 0, 0, 0))


def test_the_median_start_is_near_the_single_start() -> None:
    """On a unimodal posterior the 50 % start and the geometric-mean start agree closely."""
    p = post(0.1, 0.6, 0.25, 0.05)
    assert posterior_quantile(p, 0.5) == pytest.approx(initial_lr_from_screen(p), rel=0.5)


@pytest.mark.parametrize("base", ["sgd", "adam"])
def test_default_tuner_after_each_screening(base: str) -> None:
    name = default_tuner_for(base)
    assert name == {"sgd": "fd2", "adam": "fd2-adam"}[base]
    assert default_tuner_for(f"alrao-{base}") == name == default_tuner_for(AlraoScreener(base=base).name)  # type: ignore[arg-type]
    assert name in TUNER_NAMES
    assert posterior_fits_tuner(base, get_tuner(name))  # the default starts from the posterior


def test_default_tuner_without_a_screening_follows_the_default_screening() -> None:
    assert AlraoScreener().base == DEFAULT_SCREENING_BASE
    assert default_tuner_for(None) == default_tuner_for(DEFAULT_SCREENING_BASE) == "fd2-adam"
    with pytest.raises(ValueError, match="no default tuner"):
        default_tuner_for("rmsprop")


def test_a_switched_screeners_name_reads_as_its_base() -> None:
    from archscreen.core.tuners.start import screening_optimizer

    name = "alrao-adam+body[0.001..]+recentre@10w1+plateau(min_steps=0)"
    assert screening_optimizer(name) == "adam" and default_tuner_for(name) == "fd2-adam"
    assert screening_optimizer("adam@0.001+plateau") is None

"""Starting a tuning run from a screening: which posterior fits which tuner, and at what rate.

An Alrao screening ends with the Switch posterior over the output copies' log-spaced rates
(``ScreenResult.switch_posterior``: ``[{"lr", "weight"}, ...]``). The tuners start from it;
these helpers read it, whatever form the screening arrives in (the result, its ``to_dict()``,
the JSON of ``archscreen screen --json``, or the posterior list itself).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from typing import Any, Protocol

__all__ = [
    "MULTI_START_QUANTILES",
    "initial_lr_from_screen",
    "posterior_fits_tuner",
    "posterior_quantile",
    "posterior_starts",
    "screening_optimizer",
]

MULTI_START_QUANTILES: tuple[float, ...] = (0.25, 0.5, 0.75)
"""Where :func:`posterior_starts` places the starts by default: the posterior's quartiles."""


class _HasBaseOptimizer(Protocol):
    base_optimizer: str


def screening_optimizer(screener: str) -> str | None:
    """The optimizer whose rates an Alrao screening's posterior is over (``"alrao-adam"`` -> ``"adam"``);
    ``None`` for a screener without a rate posterior. A switched screener's name carries its switches
    after ``+`` (``"alrao-adam+recentre@10w1"`` -> ``"adam"``)."""
    base = screener.split("+", 1)[0]
    return base.removeprefix("alrao-") if base.startswith("alrao-") else None


def posterior_fits_tuner(screening_base: str | None, tuner: _HasBaseOptimizer) -> bool:
    """Whether a posterior over ``screening_base``'s rates can start ``tuner``: an Adam rate is no
    SGD rate (their scales differ by orders of magnitude). ``None`` (unknown) is taken to fit."""
    return screening_base is None or screening_base == tuner.base_optimizer


def _posterior_and_preferred(result_or_posterior: Any) -> tuple[Any, Any]:
    if isinstance(result_or_posterior, Sequence) and not isinstance(result_or_posterior, str | bytes):
        return list(result_or_posterior), None
    if isinstance(result_or_posterior, dict):
        return result_or_posterior.get("switch_posterior"), result_or_posterior.get("preferred_lr")
    return (
        getattr(result_or_posterior, "switch_posterior", None),
        getattr(result_or_posterior, "preferred_lr", None),
    )


def _checked(posterior: Any) -> tuple[list[float], list[float]]:
    """The posterior's rates and weights, validated (finite, rates > 0, weights >= 0, not all 0)."""
    try:
        lrs = [float(e["lr"]) for e in posterior]
        ws = [float(e["weight"]) for e in posterior]
    except (TypeError, KeyError, ValueError):
        raise ValueError("switch_posterior must be a list of {'lr': ..., 'weight': ...}") from None
    if any(not (lr > 0 and math.isfinite(lr)) for lr in lrs):
        raise ValueError("switch_posterior rates must be finite and > 0")
    if any(not (w >= 0 and math.isfinite(w)) for w in ws) or sum(ws) <= 0:
        raise ValueError("switch_posterior weights must be finite, >= 0 and not all zero")
    return lrs, ws


def initial_lr_from_screen(result_or_posterior: Any, lr_range: tuple[float, float] | None = None) -> float:
    """The initial rate for tuning from an Alrao screening result.

    The Switch posterior's weighted geometric mean :math:`\\exp(\\sum_j w_j \\log\\eta_j / \\sum_j w_j)`,
    clipped to ``lr_range`` (default: the range of the copies' rates, i.e. the screening range).

    Accepts a :class:`~archscreen.core.screening.ScreenResult`, its ``to_dict()`` / the JSON of
    ``archscreen screen --json``, or the posterior itself (a list of ``{"lr", "weight"}``). A
    result without a posterior but with ``preferred_lr`` uses that rate.
    """
    posterior, preferred = _posterior_and_preferred(result_or_posterior)
    if not posterior:
        if preferred is not None and float(preferred) > 0 and math.isfinite(float(preferred)):
            lr = float(preferred)
            return min(max(lr, lr_range[0]), lr_range[1]) if lr_range else lr
        raise ValueError("no Switch posterior in the screening result (was it screened with Alrao?)")
    lrs, ws = _checked(posterior)
    log_mean = statistics.fmean([math.log(lr) for lr in lrs], weights=ws)
    lo, hi = lr_range if lr_range is not None else (min(lrs), max(lrs))
    if not 0 < lo <= hi:
        raise ValueError(f"invalid lr_range {lr_range}")
    return min(max(math.exp(log_mean), lo), hi)


def posterior_quantile(posterior: Any, q: float) -> float:
    r"""The ``q``-quantile of a Switch posterior, as a rate, interpolated in :math:`\log\eta`.

    The posterior is a distribution over the copies' log-spaced rates :math:`\eta_1 < \dots <
    \eta_N`. Read literally, every quantile is one of those N rates, and a posterior with most
    of its weight on one copy would put all the starts on one rate. Instead each copy's weight is
    spread uniformly over its cell in :math:`\log\eta` (from the midpoint to its lower neighbour
    to the midpoint to its upper one; the end cells reach half a spacing beyond the end rates),
    so the CDF is piecewise linear in :math:`\log\eta`, the median of a posterior split 50/50
    between two adjacent copies is their geometric mean, and the quartiles of a posterior on one
    copy lie a quarter of a spacing either side of it. ``q`` in [0, 1].
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is not in [0, 1]")
    posterior, _ = _posterior_and_preferred(posterior)
    if not posterior:
        raise ValueError("no Switch posterior in the screening result (was it screened with Alrao?)")
    lrs, ws = _checked(posterior)
    pairs = sorted(zip((math.log(lr) for lr in lrs), ws, strict=True))
    logs = [x for x, _ in pairs]
    total = sum(w for _, w in pairs)
    if len(logs) == 1:
        return math.exp(logs[0])
    edges = [logs[0] - (logs[1] - logs[0]) / 2]
    edges += [(a + b) / 2 for a, b in itertools.pairwise(logs)]
    edges.append(logs[-1] + (logs[-1] - logs[-2]) / 2)
    target, cum = q * total, 0.0
    for i, (_, w) in enumerate(pairs):
        if w > 0 and cum + w >= target:
            frac = (target - cum) / w
            return math.exp(edges[i] + frac * (edges[i + 1] - edges[i]))
        cum += w
    return math.exp(edges[-1])  # q = 1 with rounding: the top edge


def posterior_starts(
    result_or_posterior: Any,
    quantiles: Sequence[float] = MULTI_START_QUANTILES,
    lr_range: tuple[float, float] | None = None,
) -> list[float]:
    """Starting rates for a multi-start tuning: the posterior's ``quantiles`` (default 25/50/75 %).

    One finite-difference run cannot undo its short-horizon bias (``docs/tuners.md``); the
    posterior's width says how unsure the screening is about the rate, so the starts are spread
    over it and the run with the best validation loss is kept (issue 16). Each start is
    :func:`posterior_quantile`, clipped to ``lr_range`` (default: the copies' rates, the
    screening range). A result with only ``preferred_lr`` gives that one rate; equal starts are
    returned once (in quantile order).
    """
    posterior, _ = _posterior_and_preferred(result_or_posterior)
    if not posterior:
        return [initial_lr_from_screen(result_or_posterior, lr_range)]
    lrs, _ = _checked(posterior)
    lo, hi = lr_range if lr_range is not None else (min(lrs), max(lrs))
    if not 0 < lo <= hi:
        raise ValueError(f"invalid lr_range {lr_range}")
    out: list[float] = []
    for q in quantiles:
        lr = min(max(posterior_quantile(posterior, q), lo), hi)
        if not any(math.isclose(lr, x, rel_tol=1e-9) for x in out):
            out.append(lr)
    return out

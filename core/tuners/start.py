"""Starting a tuning run from a screening: which posterior fits which tuner, and at what rate.

An Alrao screening ends with the Switch posterior over the output copies' log-spaced rates
(``ScreenResult.switch_posterior``: ``[{"lr", "weight"}, ...]``). The tuners start from it;
these helpers read it, whatever form the screening arrives in (the result, its ``to_dict()``,
the JSON of ``archscreen screen --json``, or the posterior list itself).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["initial_lr_from_screen", "posterior_fits_tuner", "screening_optimizer"]


class _HasBaseOptimizer(Protocol):
    base_optimizer: str


def screening_optimizer(screener: str) -> str | None:
    """The optimizer whose rates an Alrao screening's posterior is over (``"alrao-adam"`` -> ``"adam"``);
    ``None`` for a screener without a rate posterior."""
    return screener.removeprefix("alrao-") if screener.startswith("alrao-") else None


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

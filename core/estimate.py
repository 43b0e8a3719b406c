"""Extrapolate a screening run's validation curve to the score it would reach, with an interval.

A screening run stops early (patience, an epoch cap), and the first fidelity study found that its
best observed score under-states the best-rate score most for slow learners cut off by the budget
(``docs/fidelity.md``). This module fits a parametric learning curve to the per-epoch validation
score and reads it at a horizon (by default the asymptote), with an interval.

Curves, in the *gain* orientation ``g`` (the score for higher-is-better metrics, minus the score
otherwise), as a function of optimizer steps ``t``:

* ``power-law``: ``g(t) = a - b * t**(-c)`` (``b, c > 0``), the usual learning-curve law
  (Domhan et al., 2015; Viering & Loog, 2022);
* ``exp-saturation``: ``g(t) = a - b * exp(-c * t)`` (``b, c > 0``);
* ``auto``: whichever of the two has the smaller residual sum of squares;
* ``best-observed``: no extrapolation (the best validation score seen; what a screening reported
  before this module).

The value is never worse than the best observed score (a fit that predicts a decline is
ignored: early stopping keeps the best epoch); the interval always contains the value. The
interval comes from the fit's covariance:
``n_draws`` parameter vectors drawn from the normal approximation around the least-squares fit,
each read at the horizon; the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles form ``low``
and ``high`` (no refits, so an estimate costs one or two fits: a bootstrap over points cost
about 1.5 s a curve, too much to run after every screening). A curve with
fewer than ``MIN_POINTS`` finite points, or a fit that fails, falls back to ``best-observed``
with a zero-width interval (and says so in ``method``).

Pure numpy/scipy: no torch, no service imports.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

Method = Literal["auto", "power-law", "exp-saturation", "best-observed"]
METHODS: tuple[str, ...] = ("auto", "power-law", "exp-saturation", "best-observed")
MIN_POINTS = 4


@dataclass(frozen=True)
class Estimate:
    """An extrapolated score and its interval, in the metric's own units and orientation.

    ``method`` is the curve that produced it (``power-law``, ``exp-saturation``), or
    ``best-observed`` (with ``(fallback)`` appended when an extrapolation was asked for but the
    curve was too short or the fit failed).
    """

    value: float
    low: float
    high: float
    method: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def shifted(self, delta: float) -> Estimate:
        """The same estimate moved by ``delta`` (e.g. from the validation to the test split)."""
        return Estimate(self.value + delta, self.low + delta, self.high + delta, self.method)


def _power(t: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a - b * np.power(t, -c)


def _exp(t: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a - b * np.exp(-c * t)


_CURVES: dict[str, Callable[..., np.ndarray]] = {"power-law": _power, "exp-saturation": _exp}


def _fit(name: str, t: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Least-squares parameters (a, b, c) of one curve on ``t`` scaled to (0, 1] and their
    covariance, or None."""
    span = float(np.ptp(g)) or 1.0
    top = float(np.max(g))
    p0 = [top + 0.1 * span, span, 0.5 if name == "power-law" else 3.0]
    # The asymptote may not exceed the best point by more than a few curve spans: a wild
    # extrapolation from a nearly flat or noisy curve is worse than none.
    bounds = ([top - 10 * span, 0.0, 1e-3], [top + 3 * span, 100 * span + 1e-9, 50.0])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            params, cov = curve_fit(_CURVES[name], t, g, p0=p0, bounds=bounds, maxfev=2000)
    except (RuntimeError, ValueError):
        return None
    if not np.all(np.isfinite(params)):
        return None
    return np.asarray(params), np.asarray(cov)


def _choose(method: str, t: np.ndarray, g: np.ndarray) -> tuple[str, np.ndarray, np.ndarray] | None:
    names = ["power-law", "exp-saturation"] if method == "auto" else [method]
    fits = [(n, *f) for n in names if (f := _fit(n, t, g)) is not None]
    if not fits:
        return None
    return min(fits, key=lambda f: float(np.sum((_CURVES[f[0]](t, *f[1]) - g) ** 2)))


def _check_args(
    steps: Sequence[float], values: Sequence[float | None], method: str, level: float, horizon: float | None
) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if len(steps) != len(values):
        raise ValueError(f"steps and values differ in length ({len(steps)} vs {len(values)})")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if horizon is not None and not horizon > 0:
        raise ValueError(f"horizon must be > 0 steps, got {horizon}")


def _gain_points(
    steps: Sequence[float], values: Sequence[float | None], sign: float
) -> tuple[np.ndarray, np.ndarray]:
    """The curve's finite points at positive steps: steps ``t`` and gains ``g`` (score times ``sign``)."""
    pts = [
        (float(s), sign * float(v))
        for s, v in zip(steps, values, strict=True)
        if v is not None and math.isfinite(float(v)) and s > 0
    ]
    if not pts:
        raise ValueError("the curve has no finite point")
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts])


def _read(curve: Callable[..., np.ndarray], p: np.ndarray, horizon: float | None, scale: float) -> np.ndarray:
    """The curve at the horizon (or its asymptote) for each row of parameters ``p``."""
    if horizon is None:
        return p[:, 0]
    t_h = horizon / scale
    return np.asarray(curve(t_h, p[:, 0], p[:, 1], p[:, 2]))


def _interval(
    curve: Callable[..., np.ndarray],
    params: np.ndarray,
    cov: np.ndarray,
    at: tuple[float | None, float],
    level: float,
    n_draws: int,
    seed: int,
) -> tuple[float, float] | None:
    """The ``level`` quantiles of the curve read at ``at`` (horizon, scale) over parameter draws
    from the fit's normal approximation; None when the fit is singular."""
    if not np.all(np.isfinite(cov)):
        return None
    rng = np.random.default_rng(seed)
    draws = rng.multivariate_normal(params, cov, size=n_draws, method="eigh", check_valid="ignore")
    # A draw keeps b, c in their valid range. The interval is the fitted curve's: it is not clipped
    # at the best observed point (a noisy maximum), only widened to contain the value.
    draws[:, 1:] = np.maximum(draws[:, 1:], [0.0, 1e-3])
    with np.errstate(over="ignore", invalid="ignore"):
        vals = _read(curve, draws, *at)
    vals = vals[np.isfinite(vals)]
    if len(vals) < n_draws // 2:
        return None
    low, high = (float(q) for q in np.quantile(vals, [(1 - level) / 2, (1 + level) / 2]))
    return low, high


def extrapolate(
    steps: Sequence[float],
    values: Sequence[float | None],
    *,
    higher_is_better: bool,
    horizon: float | None = None,
    method: str = "auto",
    level: float = 0.9,
    n_draws: int = 500,
    seed: int = 0,
    best_possible: float | None = None,
) -> Estimate:
    """Estimate the score the run's curve reaches at ``horizon`` steps (None: its asymptote).

    Args:
        steps: cumulative optimizer steps at the end of each epoch (increasing).
        values: the validation score at each epoch (None or non-finite entries are skipped).
        higher_is_better: accuracy (True) or a loss, bits per character, MSE (False).
        horizon: where to read the fitted curve, in steps; None reads its asymptote ``a``.
        method: one of :data:`METHODS`.
        level: the interval's nominal coverage.
        n_draws: parameter draws for the interval.
        seed: the draws' generator seed (the estimate is deterministic given it).
        best_possible: the metric's bound (accuracy 1, a loss or MSE 0): value and interval
            are clipped to it.
    """
    _check_args(steps, values, method, level, horizon)
    sign = 1.0 if higher_is_better else -1.0
    t, g = _gain_points(steps, values, sign)
    best = float(np.max(g))
    cap = math.inf if best_possible is None else sign * best_possible

    def out(value: float, low: float, high: float, name: str) -> Estimate:
        v, lo, hi = (sign * min(x, cap) for x in (value, low, high))
        return Estimate(v, min(lo, hi), max(lo, hi), name)

    if method == "best-observed":
        return out(best, best, best, "best-observed")
    if len(t) < MIN_POINTS:
        return out(best, best, best, "best-observed (fallback)")
    scale = float(t[-1])
    ts = t / scale  # steps in units of the run's length: well-conditioned fits
    chosen = _choose(method, ts, g)
    if chosen is None:
        return out(best, best, best, "best-observed (fallback)")
    name, params, cov = chosen
    curve = _CURVES[name]
    value = max(best, float(_read(curve, params[None, :], horizon, scale)[0]))
    interval = _interval(curve, params, cov, (horizon, scale), level, n_draws, seed)
    if interval is None:
        return out(value, value, value, f"{name} (no interval: singular fit)")
    low, high = interval
    return out(value, min(low, value), max(high, value), name)


# The screener's setting, chosen on the fidelity study II's selection half (docs/fidelity.md): of
# power law, exponential saturation and the better-fitting of the two, each read at the budget's
# epoch cap or at its asymptote, exponential saturation at the cap had the lowest mean relative
# error (by a hair over no extrapolation at all: the study found the estimate's error is mostly
# not a curve cut short).
DEFAULT_METHOD = "exp-saturation"


def estimate_for_curves(
    curves: Sequence[dict[str, Any]],
    task: str,
    *,
    max_epochs: int | None = None,
    method: str = DEFAULT_METHOD,
    horizon: float | None = None,
    level: float = 0.9,
) -> Estimate | None:
    """The estimate of a run's best-rate validation score from its per-epoch records.

    ``curves`` are :class:`~archscreen.core.training.loop.EpochRecord` dicts. The metric: validation
    accuracy for classification, bits per character for a language model, MSE for regression
    (the units of ``ScreenResult``'s ``val_accuracy``, ``val_bpc``, ``val_mse``). The curve is
    read at ``horizon`` steps, else at the budget's cap (``max_epochs`` times the first epoch's
    steps, at least the steps run), else at its asymptote. None when the run has no finite point
    (e.g. it diverged at once).
    """
    steps: list[float] = []
    total = 0
    for r in curves:
        total += int(r["steps"])
        steps.append(float(total))
    if task == "regression":
        values = [r.get("val_mse") for r in curves]
        higher = False
    elif task == "language_model":
        values = [r["val_loss"] / math.log(2.0) if r.get("val_loss") is not None else None for r in curves]
        higher = False
    else:
        values = [r.get("val_accuracy") for r in curves]
        higher = True
    bound = 1.0 if higher else 0.0
    if not any(v is not None and math.isfinite(v) for v in values):
        return None
    if horizon is None and max_epochs is not None and steps:
        horizon = max(float(max_epochs * int(curves[0]["steps"])), steps[-1])
    return extrapolate(
        steps,
        values,
        higher_is_better=higher,
        horizon=horizon,
        method=method,
        level=level,
        best_possible=bound,
    )

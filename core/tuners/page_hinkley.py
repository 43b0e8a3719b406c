r"""The Page-Hinkley guard (the "S" of SALERA) as a wrapper around any optimizer.

.. math::
    \begin{aligned}
    &\textbf{input}: \text{optimizer}, \lambda \text{ (lam)}, \zeta \text{ (factor)}, \rho \text{ (rho)},
        \kappa \text{ (noise\_margin)} \\
    &\textbf{first minibatch}: \Delta \leftarrow \ell_1/\lambda \\
    &\textbf{each minibatch}: t \leftarrow t+1;\ \tilde\ell \leftarrow \rho\ell + (1-\rho)\tilde\ell;\
        \bar\ell \leftarrow \bar\ell + (\tilde\ell - \bar\ell)/t \\
    &\quad L \leftarrow L + (\tilde\ell - \bar\ell - \kappa\hat s^2/\Delta);\
        L_{\min} \leftarrow \min(L_{\min}, L) \\
    &\quad \textbf{if}\ L - L_{\min} > \Delta: \theta \leftarrow \theta^{(b)};\ \eta \leftarrow \eta/\zeta;
        \ \text{reset } t, L, L_{\min}, \bar\ell, \tilde\ell \\
    &\quad \textbf{else}: \theta^{(b)} \leftarrow \theta;\ \text{inner step}
    \end{aligned}

:math:`\eta` is every group's ``lr`` of the wrapped optimizer (for ALERA/SPALERA/Ag-Adam the
factor :math:`\eta_0` of their per-tensor or per-coordinate multipliers).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._common import check_positive, flat_params

__all__ = ["PageHinkley"]


def _fresh_test() -> dict[str, float]:
    return {"t": 0, "smoothed": 0.0, "mean": 0.0, "m2": 0.0, "L": 0.0, "L_min": 0.0}


class PageHinkley(Optimizer):
    r"""Wrap ``optimizer``: detect an upward change of the minibatch loss, then backtrack.

    Call ``step(loss=minibatch_loss)`` after ``backward()``. On a detection the parameters are
    restored bit-exactly to the copy saved before the last accepted step, every group's ``lr`` is
    divided by ``factor``, the test restarts, and the inner step is skipped; ``step`` returns
    ``True`` when it fired. The saved copy and the test's statistics are in ``state_dict()``.

    Args:
        optimizer: any ``torch.optim.Optimizer`` (its ``param_groups`` are shared).
        lam: :math:`\lambda`; the threshold is :math:`\Delta = \ell_1/\lambda` (paper: 10).
        factor: :math:`\zeta`, the divisor of the rate on a detection (paper: 2; its Appendix C
            suggests 3–5 may be better).
        rho: smoothing of the loss signal (paper's :math:`\rho`; 1 = no smoothing).
        noise_margin: :math:`\kappa`, see the note; 0 is the paper's test.

    .. note::
        **Deviation (a guard; ``noise_margin=0`` for the paper).** With the paper's margin of 0 the
        cumulative deviation :math:`L_t` of a *stationary* noisy loss is a random walk with standard
        deviation about :math:`s\sqrt t`, so it crosses :math:`\Delta` sooner or later (a
        simulation with 1% noise triggered 19 times in 10 000 steps). The default subtracts a drift
        :math:`\kappa\hat s^2/\Delta` per step (:math:`\hat s^2` the running variance of the loss
        since the last reset), the classic Page-Hinkley tolerance scaled so that the false-alarm
        rate, about :math:`e^{-2\kappa}` per excursion, does not depend on the noise level. A
        catastrophic jump of the loss (:math:`\gg \hat s`) still fires at once.

    .. note::
        Algorithm 1's line 4 read literally (:math:`\bar\ell \leftarrow (\ell + t\bar\ell)/(t+1)`
        after :math:`t \leftarrow t+1`) gives :math:`\bar\ell_1 = \ell_1/2` and fires at the first
        step; we use the running mean the text describes. The smoothed loss restarts from the next
        minibatch's loss rather than from 0 after a reset, for the same reason.

    References:
        Schoenauer Sebag, Schoenauer, Sebag, arXiv:1709.01427 (2017), §2.2, Algorithm 1,
        Appendix C; E. Page, *Continuous inspection schemes*, Biometrika 41, 1954.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        lam: float = 10.0,
        factor: float = 2.0,
        rho: float = 1.0,
        noise_margin: float = 5.0,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"PageHinkley wraps a torch.optim.Optimizer, got {type(optimizer).__name__}")
        check_positive("lam", lam)
        if not (isinstance(factor, int | float) and math.isfinite(factor) and factor > 1.0):
            raise ValueError(f"Invalid factor: {factor} (must be > 1)")
        if not (isinstance(rho, int | float) and 0.0 < rho <= 1.0):
            raise ValueError(f"Invalid rho: {rho} (must be in (0, 1])")
        check_positive("noise_margin", noise_margin, allow_zero=True)
        self.optimizer = optimizer
        self.lam, self.factor, self.rho, self.noise_margin = (
            float(lam),
            float(factor),
            float(rho),
            noise_margin,
        )
        # Share the inner groups (as torch's LR schedulers and wrappers do); no extra defaults.
        self.defaults = optimizer.defaults
        self.param_groups = optimizer.param_groups
        self.state: Any = {"ph": {**_fresh_test(), "threshold": None, "triggers": 0}, "backup": None}
        self._optimizer_step_pre_hooks = {}
        self._optimizer_step_post_hooks = {}
        self._optimizer_state_dict_pre_hooks = {}  # type: ignore[assignment]
        self._optimizer_state_dict_post_hooks = {}  # type: ignore[assignment]
        self._optimizer_load_state_dict_pre_hooks = {}  # type: ignore[assignment]
        self._optimizer_load_state_dict_post_hooks = {}  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"PageHinkley({self.optimizer!r}, lam={self.lam}, factor={self.factor})"

    def _params(self) -> list[Tensor]:
        return flat_params(self)[0]  # reused across steps until param_groups change

    @property
    def triggers(self) -> int:
        return int(self.state["ph"]["triggers"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def observe(self, loss: float) -> bool:
        """Feed one minibatch loss to the test; ``True`` when it detects a change (no side effects)."""
        ph = self.state["ph"]
        if ph["threshold"] is None:
            ph["threshold"] = abs(float(loss)) / self.lam
        ph["t"] += 1
        t = ph["t"]
        ph["smoothed"] = float(loss) if t == 1 else self.rho * float(loss) + (1 - self.rho) * ph["smoothed"]
        x = ph["smoothed"]
        var = ph["m2"] / (t - 2) if t > 2 else 0.0  # the noise of the *previous* losses
        diff = x - ph["mean"]
        ph["mean"] += diff / t
        ph["m2"] += diff * (x - ph["mean"])
        delta = ph["threshold"]
        drift = self.noise_margin * var / delta if delta > 0 else 0.0
        ph["L"] += x - ph["mean"] - drift
        ph["L_min"] = min(ph["L_min"], ph["L"])
        return bool(ph["L"] - ph["L_min"] > delta) or not math.isfinite(ph["L"])

    @torch.no_grad()
    def step(  # type: ignore[override]
        self, closure: Callable[[], float] | None = None, *, loss: float | Tensor | None = None, **kwargs: Any
    ) -> bool:
        """Test ``loss`` (or ``closure()``), then backtrack or save and run the inner step.

        Extra keyword arguments go to the inner optimizer's ``step``.
        """
        if loss is None:
            if closure is None:
                raise ValueError("PageHinkley.step needs the minibatch loss: step(loss=...) or a closure")
            with torch.enable_grad():
                loss = closure()
        value = float(loss.detach()) if isinstance(loss, Tensor) else float(loss)
        params = self._params()
        if self.observe(value):
            backup = self.state["backup"]
            if backup is not None:
                for p, b in zip(params, backup, strict=True):
                    p.copy_(b)
            for g in self.param_groups:
                g["lr"] = g["lr"] / self.factor
            ph = self.state["ph"]
            ph.update(_fresh_test())
            ph["triggers"] += 1
            return True
        backup = self.state["backup"]
        if backup is None:
            self.state["backup"] = [p.detach().clone() for p in params]
        else:
            torch._foreach_copy_(backup, params)  # under no_grad: no detached views needed
        self.optimizer.step(**kwargs)
        return False

    def state_dict(self) -> dict[str, Any]:
        return {
            "inner": self.optimizer.state_dict(),
            "ph": dict(self.state["ph"]),
            "backup": self.state["backup"],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict["inner"])
        self.param_groups = self.optimizer.param_groups
        self.state["ph"] = dict(state_dict["ph"])
        backup = state_dict["backup"]
        if backup is not None:
            backup = [b.detach().clone().to(p.device) for b, p in zip(backup, self._params(), strict=True)]
        self.state["backup"] = backup

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        self.optimizer.add_param_group(param_group)
        self.state["backup"] = None

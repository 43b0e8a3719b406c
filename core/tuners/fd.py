r"""Finite-difference learning-rate tuning (Ravaut & Gorti, 2018), as ``torch.optim`` optimizers.

Let :math:`f(\eta) = L(w - \eta g)` be the loss one step ahead with rate :math:`\eta`.

* :class:`FD2SGD` (second order, Newton on :math:`\eta`, the ``fd2`` tuner): five
  evaluations of :math:`f` by finite differences, no meta rate.
* :class:`FD2Adam` (the ``fd2-adam`` tuner): the same Newton step on :math:`f(\eta) = L(w - \eta u)`,
  :math:`u` Adam's bias-corrected direction :math:`\hat m/(\sqrt{\hat v}+\epsilon)`;
* :class:`FD1SGD` (first order, the ``fd1`` tuner): :math:`\eta \leftarrow \eta - \alpha f'(\eta)`
  with :math:`f'(\eta) = -g_t \cdot g_{t+1}`.

The rate is ``param_groups[i]["lr"]`` (one global rate, written to every group); scalar
tuner state (step counter, rate momentum, last diagnostics) lives in ``self.state["fd"]``,
so everything round-trips through :meth:`state_dict`.

The five perturbed losses of :class:`FD2SGD` are computed by a caller-supplied
``loss_at(params) -> loss`` evaluated *functionally* on :math:`w - \eta' g` (see
:func:`archscreen.core.tuners.functional.functional_loss`): the real weights are never touched, so
the paper's "cancel" step costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, cast

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._common import check_lr, check_positive, flat_params, grads_of, set_global_lr

__all__ = ["FD1SGD", "FD2SGD", "FD2Adam", "LossAt", "newton_rate_step"]

LossAt = Callable[[list[Tensor]], Tensor]
"""``loss_at(params)``: the loss with the model's parameters replaced by ``params``
(same order as the optimizer's parameters)."""

BatchedLossAt = Callable[[list[Tensor]], Tensor]
"""``loss_at_batched(stacked)``: each tensor has a leading dimension of 5; returns 5 losses."""


def newton_rate_step(f: Sequence[float], eta: float, eps: float, delta: float) -> tuple[float, float, float]:
    r"""The paper's eq. (10)/(12): returns ``(delta_eta, numerator, curvature)``.

    ``f = (f(η), f(η+ε), f(η−ε), f(η+2ε), f(η−2ε))``;
    :math:`\Delta\eta = -2\varepsilon\,(f(\eta+\varepsilon) - f(\eta-\varepsilon)) /
    (f(\eta+2\varepsilon) + f(\eta-2\varepsilon) - 2f(\eta) + \delta)`.
    """
    f0, fp, fm, fpp, fmm = (float(v) for v in f)
    numerator = fp - fm
    curvature = fpp + fmm - 2.0 * f0
    return -2.0 * eps * numerator / (curvature + delta), numerator, curvature


def _sgd_step(params: list[Tensor], grads: list[Tensor], lr: float, foreach: bool) -> None:
    if foreach:
        torch._foreach_add_(params, grads, alpha=-lr)
    else:
        for p, g in zip(params, grads, strict=True):
            p.add_(g, alpha=-lr)


class FD2SGD(Optimizer):
    r"""SGD whose rate is tuned online by Newton's method on :math:`f(\eta) = L(w - \eta g)`.

    .. math::
        \begin{aligned}
        &\textbf{input}: \eta_0 \text{ (lr)}, \varepsilon \text{ (eps)}, \delta \text{ (delta)},
            \beta \text{ (momentum)}, k \text{ (every)}, w_0, L \\
        &\textbf{for}\ t = 0, 1, \dots \\
        &\quad g_t \leftarrow \nabla L(w_t) \\
        &\quad \textbf{if}\ t \bmod k = 0: \\
        &\qquad f_j \leftarrow L(w_t - (\eta_t + j\varepsilon) g_t),\ j \in \{0, \pm 1, \pm 2\}
            \quad \text{(functionally, } w_t \text{ untouched)} \\
        &\qquad b \leftarrow \beta b - 2\varepsilon \frac{f_{1} - f_{-1}}{f_{2} + f_{-2} - 2 f_0 + \delta}
            ;\quad \eta_{t+1} \leftarrow \max(\eta_t + b, \delta) \\
        &\quad w_{t+1} \leftarrow w_t - \eta_t g_t \quad \text{(the paper's order: the step uses } \eta_t)
        \end{aligned}

    Call ``step(loss_at=...)``; without ``loss_at`` (or between updates) it is plain SGD at the
    current rate. With :math:`f` quadratic the finite differences are exact and one Newton step
    lands on :math:`\eta^* = g^\top g / g^\top H g` (damped by :math:`\delta/4\varepsilon^2`).

    Args:
        params: parameters or groups; all groups share one rate.
        lr: initial rate :math:`\eta_0` (default 0.01).
        eps: finite-difference step :math:`\varepsilon` (paper 1e-5). With ``relative_eps`` it
            is a fraction of :math:`\eta` (step :math:`\varepsilon\eta`).
        delta: smoothing of the denominator and floor of :math:`\eta` (paper 1e-6).
        momentum: :math:`\beta` on the rate updates (paper §5.2 variant: 0.9; default 0: off).
        every: update :math:`\eta` every ``k`` steps (default 1; paper: every step).
        average: :math:`\beta_a` in [0, 1); > 0 replaces the single Newton step by one on
            exponential averages: :math:`\eta \leftarrow \overline{f''\eta - f'} / \overline{f''}`,
            the :math:`f''`-weighted average of the past Newton targets (exact on a quadratic;
            averages out minibatch noise). Default 0: the paper's step (a switch, not in the paper).
        relative_eps: guard, see note (default False).
        eval_dtype: dtype of the five evaluations; ``None`` = the parameters' (guard, see note).
        curvature_guard: skip the Newton update when the curvature is :math:`\le 0` (guard).
        max_change: clamp each update to :math:`[\eta/c, c\eta]`; ``None``: off (guard).
        finite_guard: a non-finite :math:`f` divides :math:`\eta` by 2 instead of updating (guard).
        evaluation: ``"sequential"`` (five calls of ``loss_at``), ``"batched"`` (one call of
            ``loss_at_batched`` over five stacked weight sets, e.g. ``torch.func.vmap``), or
            ``"auto"``: batched on accelerators when ``loss_at_batched`` is given, sequential on
            CPU where a vmap measured slower.
        foreach: use ``torch._foreach_*`` for the weight arithmetic (default: accelerators only).

    .. note::
        **Numerics (guards; all off in the paper-exact configuration).** In float32 the
        differences at :math:`\varepsilon = 10^{-5}` drown in rounding (the second difference
        can even take the wrong sign), and even in float64 the curvature term is far below
        :math:`\delta`, so the update degenerates to :math:`\eta - (4\varepsilon^2/\delta)f'(\eta)`,
        a first-order step with meta rate 4e-4. ``eval_dtype=torch.float64`` removes the rounding;
        ``relative_eps=True`` with ``eps=0.1`` makes the finite-difference step large enough for
        the Newton step to act in float32. ``curvature_guard`` stops Newton walking uphill when
        :math:`f'' \le 0`; ``max_change`` bounds the jump on a noisy minibatch;
        ``finite_guard`` keeps :math:`\eta` finite when a trial point overflows.

    .. note::
        Perturbed losses are computed with the model in its current mode; the caller's
        ``loss_at`` should use the same random numbers for the five points (common dropout
        masks) and not update buffers (see :func:`archscreen.core.tuners.functional.functional_loss`).

    Example:
        >>> opt = FD2SGD(model.parameters(), lr=0.01)  # doctest: +SKIP
        >>> loss = model(x, y).loss; opt.zero_grad(); loss.backward()  # doctest: +SKIP
        >>> opt.step(loss_at=functional_loss(model, x, y))  # doctest: +SKIP

    References:
        P. Ravaut, S. Gorti. *Gradient descent revisited via an adaptive online learning rate*
        (Stanford CS229 report), 2018. Second-order method: §3.2 and §4.1; momentum §5.2,
        validation batch §5.3.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.01,
        *,
        eps: float = 1e-5,
        delta: float = 1e-6,
        momentum: float = 0.0,
        every: int = 1,
        average: float = 0.0,
        relative_eps: bool = False,
        eval_dtype: torch.dtype | None = None,
        curvature_guard: bool = False,
        max_change: float | None = None,
        finite_guard: bool = False,
        evaluation: Literal["auto", "sequential", "batched"] = "auto",
        foreach: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_positive("eps", eps)
        check_positive("delta", delta)
        if not (isinstance(momentum, int | float) and 0.0 <= momentum < 1.0):
            raise ValueError(f"Invalid momentum: {momentum} (must be in [0, 1))")
        if not (isinstance(average, int | float) and 0.0 <= average < 1.0):
            raise ValueError(f"Invalid average: {average} (must be in [0, 1))")
        if not (isinstance(every, int) and not isinstance(every, bool) and every >= 1):
            raise ValueError(f"Invalid every: {every} (must be an int >= 1)")
        if relative_eps and eps >= 0.5:
            raise ValueError(f"Invalid eps: {eps} (a relative eps must be < 0.5 so that η − 2εη > 0)")
        if max_change is not None and not (isinstance(max_change, int | float) and max_change > 1.0):
            raise ValueError(f"Invalid max_change: {max_change} (must be > 1 or None)")
        if eval_dtype is not None and not (
            isinstance(eval_dtype, torch.dtype) and eval_dtype.is_floating_point
        ):
            raise ValueError(f"Invalid eval_dtype: {eval_dtype} (must be a floating torch.dtype or None)")
        if evaluation not in ("auto", "sequential", "batched"):
            raise ValueError(f"Invalid evaluation: {evaluation!r} (auto, sequential or batched)")
        defaults = {"lr": float(lr), "foreach": foreach}
        super().__init__(params, defaults)
        self.eps, self.delta, self.momentum, self.every = float(eps), float(delta), float(momentum), every
        self.average = float(average)
        self.relative_eps, self.eval_dtype = relative_eps, eval_dtype
        self.curvature_guard, self.max_change, self.finite_guard = curvature_guard, max_change, finite_guard
        self.evaluation = evaluation
        set_global_lr(self, float(self.param_groups[0]["lr"]))
        cast(dict[Any, Any], self.state)["fd"] = {"step": 0, "rate_momentum": 0.0, "updates": 0, "last": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        cast(dict[Any, Any], self.state).setdefault(
            "fd", {"step": 0, "rate_momentum": 0.0, "updates": 0, "last": {}}
        )

    @property
    def lr(self) -> float:
        return float(self.param_groups[0]["lr"])

    def _all(self) -> tuple[list[Tensor], list[Tensor]]:
        return grads_of(flat_params(self)[0], type(self).__name__)

    def _all_params(self) -> list[Tensor]:
        return flat_params(self)[0]

    def trial_params(
        self, etas: Sequence[float], dtype: torch.dtype | None = None, direction: list[Tensor] | None = None
    ) -> list[list[Tensor]]:
        """``[w − η'u for η' in etas]`` over *all* parameters, detached.

        ``u`` is ``direction`` (one tensor per parameter, in ``flat_params`` order) or, by
        default, the gradient (a parameter without one stays unchanged).
        """
        plist, foreach = flat_params(self)
        ws = [p.detach() if dtype is None else p.detach().to(dtype) for p in plist]
        if direction is not None:
            gs = [d if dtype is None else d.to(dtype) for d in direction]
        else:
            gs = [
                torch.zeros_like(w) if p.grad is None else (p.grad if dtype is None else p.grad.to(dtype))
                for p, w in zip(plist, ws, strict=True)
            ]
        out: list[list[Tensor]] = []
        for eta in etas:
            if foreach:
                out.append(list(torch._foreach_add(ws, gs, alpha=-eta)))
            else:
                out.append([w.add(g, alpha=-eta) for w, g in zip(ws, gs, strict=True)])
        return out

    def evaluate_f(
        self,
        etas: Sequence[float],
        loss_at: LossAt | None,
        loss_at_batched: BatchedLossAt | None = None,
        batched: bool = False,
        direction: list[Tensor] | None = None,
    ) -> list[float]:
        """:math:`f(\\eta')` for each rate, sequentially or in one batched call."""
        dtype = self.eval_dtype
        trials = self.trial_params(etas, dtype, direction)
        with torch.no_grad():
            if batched:
                assert loss_at_batched is not None
                stacked = [torch.stack(ts) for ts in zip(*trials, strict=True)]
                values = loss_at_batched(stacked).detach().double().cpu().tolist()
            else:
                assert loss_at is not None
                # one host sync for the five values
                values = torch.stack([loss_at(ps).detach().double() for ps in trials]).cpu().tolist()
        return [float(v) for v in values]

    def _use_batched(self, loss_at_batched: BatchedLossAt | None) -> bool:
        if self.evaluation == "sequential" or loss_at_batched is None:
            if self.evaluation == "batched" and loss_at_batched is None:
                raise ValueError("evaluation='batched' needs loss_at_batched")
            return False
        if self.evaluation == "batched":
            return True
        return self._all_params()[0].device.type != "cpu"

    @torch.no_grad()
    def step(  # type: ignore[override]
        self,
        closure: Callable[[], float] | None = None,
        *,
        loss_at: LossAt | None = None,
        loss_at_batched: BatchedLossAt | None = None,
    ) -> float | None:
        """One step along :meth:`_direction` (SGD: the gradient; :class:`FD2Adam`: Adam's); every
        ``every`` steps first update :math:`\\eta` from five evaluations along it."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        fd = cast(dict[Any, Any], self.state)["fd"]
        eta = self.lr
        params, _ = self._all()
        if not params:
            return loss
        u, full = self._direction(params)
        if (loss_at is not None or loss_at_batched is not None) and fd["step"] % self.every == 0:
            self._update_rate(eta, loss_at, loss_at_batched, full)
        fd["step"] += 1
        _sgd_step(params, u, eta, flat_params(self)[1])  # paper order: w ← w − η_t u_t
        return loss

    def _direction(self, params: list[Tensor]) -> tuple[list[Tensor], list[Tensor] | None]:
        """The step's direction for ``params`` (those with a gradient), and the trial points'
        direction over *all* parameters, or ``None`` for the gradient (:meth:`trial_params`)."""
        return [cast(Tensor, p.grad) for p in params], None

    def _update_rate(
        self,
        eta: float,
        loss_at: LossAt | None,
        loss_at_batched: BatchedLossAt | None,
        direction: list[Tensor] | None = None,
    ) -> None:
        fd = cast(dict[Any, Any], self.state)["fd"]
        e = self.eps * eta if self.relative_eps else self.eps
        etas = [eta, eta + e, eta - e, eta + 2 * e, eta - 2 * e]
        f = self.evaluate_f(etas, loss_at, loss_at_batched, self._use_batched(loss_at_batched), direction)
        d_eta, numerator, curvature = newton_rate_step(f, eta, e, self.delta)
        if self.average > 0.0 and all(math.isfinite(v) for v in f):
            # Average the Newton *targets* η − f'/f'', weighted by f'' (a ratio of two averages):
            # exact on a quadratic even though the estimates were taken at different η.
            beta = self.average
            d1, d2 = numerator / (2 * e), (curvature + self.delta) / (4 * e * e)
            fd["avg_d2"] = beta * fd.get("avg_d2", 0.0) + (1 - beta) * d2
            fd["avg_target"] = beta * fd.get("avg_target", 0.0) + (1 - beta) * (d2 * eta - d1)
            curvature = fd["avg_d2"] * 4 * e * e - self.delta
            d_eta = fd["avg_target"] / fd["avg_d2"] - eta if fd["avg_d2"] != 0 else math.inf
        guard = ""
        if self.finite_guard and not all(math.isfinite(v) for v in f):
            new_eta, guard = eta / 2.0, "nonfinite"
            fd["rate_momentum"] = 0.0
        elif self.curvature_guard and not curvature > 0.0:
            new_eta, guard = eta, "curvature"
        else:
            b = self.momentum * fd["rate_momentum"] + d_eta
            fd["rate_momentum"] = b
            new_eta = eta + b
            if self.max_change is not None:
                lo, hi = eta / self.max_change, eta * self.max_change
                if not lo <= new_eta <= hi:
                    guard = "max_change"
                new_eta = min(max(new_eta, lo), hi)
        new_eta = max(new_eta, self.delta)  # paper eq. (13); max() keeps a NaN only in paper-exact runs
        if math.isnan(d_eta) and not self.finite_guard:
            new_eta = float("nan")
        fd["updates"] += 1
        fd["last"] = {
            "f": f,
            "eps": e,
            "numerator": numerator,
            "curvature": curvature,
            "newton_eta": eta + d_eta,
            "guard": guard,
        }
        set_global_lr(self, float(new_eta))


def _adam_direction(
    states: list[dict[str, Any]],
    grads: list[Tensor],
    beta1: float,
    beta2: float,
    adam_eps: float,
    foreach: bool,
) -> list[Tensor]:
    r"""Update Adam's moments in place with ``grads`` and return :math:`\hat m / (\sqrt{\hat v} + \epsilon)`.

    The same arithmetic as ``torch.optim.Adam`` (``lerp`` for the first moment, ``addcmul`` for
    the second, per-parameter step counts for the bias corrections), as a loop over tensors or
    as ``torch._foreach_*`` calls (``foreach``).
    """
    for st, g in zip(states, grads, strict=True):
        if not st:
            st["step"] = 0
            st["exp_avg"] = torch.zeros_like(g, memory_format=torch.preserve_format)
            st["exp_avg_sq"] = torch.zeros_like(g, memory_format=torch.preserve_format)
        st["step"] += 1
    m = [st["exp_avg"] for st in states]
    v = [st["exp_avg_sq"] for st in states]
    bc1 = [1.0 - beta1 ** st["step"] for st in states]
    bc2 = [1.0 - beta2 ** st["step"] for st in states]
    if foreach:
        torch._foreach_lerp_(m, grads, 1.0 - beta1)
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, grads, grads, 1.0 - beta2)
        denom = torch._foreach_div(v, bc2)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, adam_eps)
        u = torch._foreach_div(m, bc1)
        torch._foreach_div_(u, denom)
        return list(u)
    out = []
    for mi, vi, g, c1, c2 in zip(m, v, grads, bc1, bc2, strict=True):
        mi.lerp_(g, 1.0 - beta1)
        vi.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        out.append(mi.div(c1).div_(vi.div(c2).sqrt_().add_(adam_eps)))
    return out


class FD2Adam(FD2SGD):
    r"""Adam whose rate is tuned online by Newton's method on :math:`f(\eta) = L(w - \eta u)`,
    :math:`u` Adam's bias-corrected update direction (the ``fd2-adam`` tuner).

    .. math::
        \begin{aligned}
        &\textbf{input}: \eta_0 \text{ (lr)}, \beta_1, \beta_2 \text{ (betas)}, \epsilon_A
            \text{ (adam\_eps)}, \varepsilon \text{ (eps)}, \delta \text{ (delta)}, k \text{ (every)} \\
        &\textbf{for}\ t = 1, 2, \dots \\
        &\quad g_t \leftarrow \nabla L(w_{t-1});\quad m_t \leftarrow \beta_1 m_{t-1} + (1-\beta_1) g_t;
            \quad v_t \leftarrow \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
        &\quad u_t \leftarrow \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t / (1-\beta_2^t)} + \epsilon_A} \\
        &\quad \textbf{if}\ (t-1) \bmod k = 0: \\
        &\qquad f_j \leftarrow L(w_{t-1} - (\eta_t + j\varepsilon) u_t),\ j \in \{0, \pm 1, \pm 2\}
            \quad \text{(functionally)} \\
        &\qquad \eta_{t+1} \leftarrow \max\Big(\eta_t - 2\varepsilon
            \frac{f_{1} - f_{-1}}{f_{2} + f_{-2} - 2 f_0 + \delta}, \delta\Big) \\
        &\quad w_t \leftarrow w_{t-1} - \eta_t u_t \quad \text{(the step uses } \eta_t
            \text{, as in FD2SGD)}
        \end{aligned}

    That is :class:`FD2SGD` with the gradient replaced by Adam's step direction; everything that
    acts on :math:`\eta` (the five losses, the Newton step, ``relative_eps``, ``eval_dtype``, the
    guards, ``momentum``, ``average``, ``every``, ``evaluation``) is inherited unchanged, so the
    two optimizers read the same and the same switches turn the same guards off. Without
    ``loss_at`` (or between updates) it is ``torch.optim.Adam`` (no weight decay, no amsgrad) at
    the current rate, so the recommended rate is a rate for ``torch.optim.Adam(lr=η, betas,
    eps=adam_eps)``.

    Args:
        params, lr, eps, delta, momentum, every, average, relative_eps, eval_dtype,
        curvature_guard, max_change, finite_guard, evaluation, foreach: as :class:`FD2SGD`
            (``lr`` default 1e-3, Adam's).
        betas: Adam's :math:`(\beta_1, \beta_2)` (default (0.9, 0.999), torch's).
        adam_eps: Adam's :math:`\epsilon_A` in the denominator (default 1e-8, torch's); named apart
            from ``eps``, the finite-difference step.

    State: ``state[p]`` holds ``step``, ``exp_avg``, ``exp_avg_sq`` (torch's Adam names);
    ``state["fd"]`` the rate machinery's scalars. ``state_dict()`` round-trips both.

    .. note::
        Not in the paper: Ravaut & Gorti tune SGD's rate and suggest (§6) using the tuned rate for
        Adam; this optimizer puts the Newton step on Adam's own direction so the tuned rate *is* an
        Adam rate, the one an Alrao-Adam screening's posterior is over (issue 16).

    References:
        P. Ravaut, S. Gorti. *Gradient descent revisited via an adaptive online learning rate*,
        2018, §3.2, §4.1. D. P. Kingma, J. Ba. *Adam: A method for stochastic optimization*,
        ICLR 2015 (Algorithm 1).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        adam_eps: float = 1e-8,
        **kwargs: Any,
    ) -> None:
        b1, b2 = betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"Invalid betas: {betas} (each in [0, 1))")
        check_positive("adam_eps", adam_eps)
        super().__init__(params, lr, **kwargs)
        self.betas = (float(b1), float(b2))
        self.adam_eps = float(adam_eps)

    def _direction(self, params: list[Tensor]) -> tuple[list[Tensor], list[Tensor] | None]:
        """Adam's direction for ``params`` (with a gradient), and over *all* parameters (zeros where
        there is no gradient) for the trial points."""
        grads = [cast(Tensor, p.grad) for p in params]
        foreach = flat_params(self)[1]
        u = _adam_direction([self.state[p] for p in params], grads, *self.betas, self.adam_eps, foreach)
        by_id = {id(p): d for p, d in zip(params, u, strict=True)}
        full = [by_id[id(p)] if id(p) in by_id else torch.zeros_like(p) for p in flat_params(self)[0]]
        return u, full


class FD1SGD(Optimizer):
    r"""SGD whose rate follows gradient descent on :math:`f(\eta) = L(w - \eta g)` (first order).

    .. math::
        \begin{aligned}
        &\textbf{input}: \eta_0 \text{ (lr)}, \alpha \text{ (meta\_lr)}, \delta \text{ (delta)} \\
        &\textbf{for}\ t = 0, 1, \dots \\
        &\quad g_t \leftarrow \nabla L(w_t) \\
        &\quad \textbf{if}\ t > 0: \eta_t \leftarrow \max(\eta_{t-1} - \alpha f'(\eta_{t-1}), \delta),
            \quad f'(\eta_{t-1}) = -g_{t-1} \cdot g_t \\
        &\quad w_{t+1} \leftarrow w_t - \eta_t g_t
        \end{aligned}

    The previous gradient is kept in ``state[p]["prev_grad"]``.

    Args:
        params: parameters or groups; all groups share one rate.
        lr: initial rate (default 0.01).
        meta_lr: :math:`\alpha` (default 1e-3).
        delta: floor of :math:`\eta` (paper 1e-6).
        max_change: clamp each update to :math:`[\eta/c, c\eta]`; ``None``: off (guard).
        finite_guard: skip the update when :math:`f'` is not finite (guard).
        foreach: use ``torch._foreach_*`` ops (default: accelerators only).

    .. note::
        The method is not scale invariant (the paper's remark): :math:`\alpha` acts on
        :math:`g\cdot g`. ``max_change`` (a guard, off in paper-exact runs) bounds the damage of one
        large dot product.

    References:
        P. Ravaut, S. Gorti. *Gradient descent revisited via an adaptive online learning rate*,
        2018, §3.1 (eq. 3–4).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.01,
        *,
        meta_lr: float = 1e-3,
        delta: float = 1e-6,
        max_change: float | None = None,
        finite_guard: bool = False,
        foreach: bool | None = None,
    ) -> None:
        check_lr(lr)
        check_positive("meta_lr", meta_lr)
        check_positive("delta", delta)
        if max_change is not None and not (isinstance(max_change, int | float) and max_change > 1.0):
            raise ValueError(f"Invalid max_change: {max_change} (must be > 1 or None)")
        super().__init__(params, {"lr": float(lr), "foreach": foreach})
        self.meta_lr, self.delta, self.max_change, self.finite_guard = (
            meta_lr,
            delta,
            max_change,
            finite_guard,
        )
        set_global_lr(self, float(self.param_groups[0]["lr"]))
        cast(dict[Any, Any], self.state)["fd"] = {"step": 0, "last": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        cast(dict[Any, Any], self.state).setdefault("fd", {"step": 0, "last": {}})

    @property
    def lr(self) -> float:
        return float(self.param_groups[0]["lr"])

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        all_params, foreach = flat_params(self)
        params, grads = grads_of(all_params, "FD1SGD")
        if not params:
            return loss
        fd = cast(dict[Any, Any], self.state)["fd"]
        prevs = [self.state[p].get("prev_grad") for p in params]
        have_prev = [i for i, pg in enumerate(prevs) if pg is not None]
        eta = self.lr
        if have_prev:
            gp = [prevs[i] for i in have_prev]
            gc = [grads[i] for i in have_prev]
            if foreach:
                dots = torch.stack([d.sum() for d in torch._foreach_mul(gp, gc)])
            else:
                dots = torch.stack([(a * b).sum() for a, b in zip(gp, gc, strict=True)])
            fprime = -float(dots.double().sum())
            new_eta = eta - self.meta_lr * fprime
            guard = ""
            if self.finite_guard and not math.isfinite(fprime):
                new_eta, guard = eta, "nonfinite"
            elif self.max_change is not None:
                lo, hi = eta / self.max_change, eta * self.max_change
                if not lo <= new_eta <= hi:
                    guard = "max_change"
                new_eta = min(max(new_eta, lo), hi)
            new_eta = new_eta if math.isnan(new_eta) else max(new_eta, self.delta)
            fd["last"] = {"fprime": fprime, "guard": guard}
            set_global_lr(self, float(new_eta))
            eta = float(new_eta)
        for p, g in zip(params, grads, strict=True):
            st = self.state[p]
            if "prev_grad" in st:
                st["prev_grad"].copy_(g)
            else:
                st["prev_grad"] = g.detach().clone(memory_format=torch.preserve_format)
        fd["step"] += 1
        _sgd_step(params, grads, eta, foreach)
        return loss

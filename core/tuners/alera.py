r"""Agnostic learning-rate adaptation (Schoenauer Sebag et al., 2017): ALERA, SPALERA, Ag-Adam.

All three keep the cumulative path of normalised gradients and compare its squared norm
with that of a random walk of unit vectors:

.. math::
    p_t = \alpha \frac{g_t}{\lVert g_t \rVert} + (1 - \alpha) p_{t-1}, \qquad
    \mu = \frac{\alpha}{2 - \alpha}, \qquad
    \sigma^2(d) = \frac{1}{d}\,\frac{2\alpha^2(1-\alpha)^2}{(2-\alpha)^2((1-\alpha)^2 + 1)}.

* :class:`ALERA` (layer-wise, eq. 6): per tensor of size :math:`d`,
  :math:`\eta \leftarrow \eta \exp(C(\lVert p_t\rVert^2 - \mu)/\sigma(d))`, then SGD.
* :class:`SPALERA` (parameter-wise, Appendix B): per coordinate,
  :math:`\eta_i \leftarrow \eta_i \exp(C(p_i^2 - \mu')/\sigma')` with :math:`\mu' = \mu/d`,
  :math:`\sigma' = \sigma(d)/\sqrt d`.
* :class:`AgAdam`: the ALERA control of the rate around Adam's step.

SALERA and SPALERA-with-guard are these wrapped in :class:`~.page_hinkley.PageHinkley`.

The rate is ``group["lr"]`` (:math:`\eta_0`, the factor the Page-Hinkley guard divides) times a
multiplier in ``state[p]["rate"]`` (a scalar tensor for ALERA/Ag-Adam, a parameter-shaped tensor
for SPALERA) that starts at 1. Each class has a reference path (``_single_tensor_alera``) and a
``torch._foreach_*`` path (``_multi_tensor_alera``) with the same signature; they agree in float64.

References:
    A. Schoenauer Sebag, M. Schoenauer, M. Sebag. *Stochastic Gradient Descent: Going As Fast As
    Possible But Not Faster*, arXiv:1709.01427, 2017.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, cast

import torch
from torch import Tensor
from torch.optim import Optimizer

from archscreen.core.foreach import use_foreach

from ._common import check_lr, check_positive

__all__ = ["ALERA", "SPALERA", "AgAdam", "agnostic_moments"]

_TINY = 1e-30


def agnostic_moments(alpha: float, d: int, t: int | None = None) -> tuple[float, float]:
    r""":math:`(\mu, \sigma(d))` of :math:`\lVert r_t\rVert^2` for a random walk of unit vectors.

    ``t=None`` gives the limits :math:`t \to \infty` used by the update (paper eq. 4–5);
    an integer ``t`` gives the finite-:math:`t` forms.

    .. note::
        Faithful to the paper's eq. (5). A simulation of the walk (``tests/core/tuners``) matches
        eq. (4) for the mean but gives a standard deviation :math:`\sqrt 2` times eq. (5)'s
        :math:`\sigma` (the cross terms :math:`l \ne k` count each pair twice). The update only
        uses :math:`C/\sigma`, so this is a constant factor on :math:`C`; we keep the paper's
        :math:`\sigma` so that its tuned :math:`C = 3\cdot10^{-6}` keeps its meaning.
    """
    a = alpha
    mu = a / (2 - a)
    var = (1.0 / d) * 2 * a**2 * (1 - a) ** 2 / ((2 - a) ** 2 * ((1 - a) ** 2 + 1))
    if t is not None:
        mu *= 1 - (1 - a) ** (2 * t)
        var *= (1 - (1 - a) ** t) * (1 - (1 - a) ** (t - 1))
    return mu, math.sqrt(var)


def _validate(lr: float, alpha: float, C: float) -> None:
    check_lr(lr)
    if not (isinstance(alpha, int | float) and 0.0 < alpha < 1.0):
        raise ValueError(f"Invalid alpha: {alpha} (must be in (0, 1))")
    check_positive("C", C, allow_zero=True)


# --------------------------------------------------------------------------------------------
# the shared rate control: path update + multiplicative rate update, reference and foreach
# --------------------------------------------------------------------------------------------
def _single_tensor_alera(
    grads: list[Tensor],
    paths: list[Tensor],
    rates: list[Tensor],
    *,
    alpha: float,
    C: float,
    parameterwise: bool,
    layerwise: bool,
) -> None:
    """Update ``paths`` and ``rates`` in place (reference implementation)."""
    if layerwise:
        norms = [g.norm() for g in grads]
    else:
        total = torch.sqrt(sum((g.norm() ** 2 for g in grads), torch.zeros((), device=grads[0].device)))
        norms = [total.to(g.dtype) for g in grads]
    d_all = sum(g.numel() for g in grads)
    for g, p, n in zip(grads, paths, norms, strict=True):
        p.mul_(1 - alpha).add_(g / n.clamp_min(_TINY), alpha=alpha)
    if layerwise:
        for p, r in zip(paths, rates, strict=True):
            d = p.numel()
            mu, sigma = agnostic_moments(alpha, d)
            if parameterwise:
                r.mul_(torch.exp(C * (p * p - mu / d) / (sigma / math.sqrt(d))))
            else:
                r.mul_(torch.exp(C * (p.pow(2).sum() - mu) / sigma))
    else:
        mu, sigma = agnostic_moments(alpha, d_all)
        if parameterwise:
            for p, r in zip(paths, rates, strict=True):
                r.mul_(torch.exp(C * (p * p - mu / d_all) / (sigma / math.sqrt(d_all))))
        else:
            s = sum((p.pow(2).sum() for p in paths), torch.zeros((), device=paths[0].device))
            factor = torch.exp(C * (s - mu) / sigma)
            for r in rates:
                r.mul_(factor.to(r.dtype))


def _multi_tensor_alera(
    grads: list[Tensor],
    paths: list[Tensor],
    rates: list[Tensor],
    *,
    alpha: float,
    C: float,
    parameterwise: bool,
    layerwise: bool,
) -> None:
    """Same as :func:`_single_tensor_alera` with ``torch._foreach_*`` ops."""
    norms = list(torch._foreach_norm(grads))
    if not layerwise:
        total = torch.linalg.vector_norm(torch.stack(norms))
        norms = [total.to(g.dtype) for g in grads]
    inv = [n.clamp_min(_TINY) for n in norms]
    torch._foreach_mul_(paths, 1 - alpha)
    torch._foreach_add_(paths, torch._foreach_div(grads, inv), alpha=alpha)
    dims = [p.numel() for p in paths]
    d_all = sum(dims)
    if parameterwise:
        ds = dims if layerwise else [d_all] * len(paths)
        mus, sigs = [], []
        for d in ds:
            mu, sigma = agnostic_moments(alpha, d)
            mus.append(mu / d)
            sigs.append(sigma / math.sqrt(d))
        sq = torch._foreach_mul(paths, paths)
        torch._foreach_sub_(sq, mus)
        torch._foreach_mul_(sq, [C / s for s in sigs])
        torch._foreach_exp_(sq)
        torch._foreach_mul_(rates, sq)
        return
    sq_norms = torch.stack(torch._foreach_norm(paths)).pow(2)
    if layerwise:
        mu_sig = [agnostic_moments(alpha, d) for d in dims]
        mu_t = torch.tensor([m for m, _ in mu_sig], dtype=sq_norms.dtype, device=sq_norms.device)
        sig_t = torch.tensor([s for _, s in mu_sig], dtype=sq_norms.dtype, device=sq_norms.device)
        factors = torch.exp(C * (sq_norms - mu_t) / sig_t)
        torch._foreach_mul_(rates, list(factors.unbind()))
    else:
        mu, sigma = agnostic_moments(alpha, d_all)
        factor = torch.exp(C * (sq_norms.sum() - mu) / sigma)
        torch._foreach_mul_(rates, [factor.to(r.dtype) for r in rates])


class _AgnosticBase(Optimizer):
    parameterwise = False

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        # per group: (parameter ids, params, states, paths, rates), reused across steps
        self._gathered: dict[int, tuple[tuple[int, ...], list[Tensor], list[Any], list[Tensor], list[Tensor]]]
        self._gathered = {}
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._gathered = {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._gathered = {}  # the state tensors are replaced
        super().load_state_dict(state_dict)

    def _gather(
        self, group: dict[str, Any]
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor], list[Any]]:
        """Params with a gradient, their gradients, paths, rates and state dicts.

        When every parameter of the group has a gradient and state, the lists of the previous
        step are reused (rebuilt when the group's parameters change or state is loaded).
        """
        ids = tuple(map(id, group["params"]))
        hit = self._gathered.get(id(group))
        if hit is not None and hit[0] == ids:
            cached_grads = [p.grad for p in hit[1]]
            if all(g is not None and not g.is_sparse for g in cached_grads):
                return hit[1], cast(list[Tensor], cached_grads), hit[3], hit[4], hit[2]
        params: list[Tensor] = []
        grads: list[Tensor] = []
        paths: list[Tensor] = []
        rates: list[Tensor] = []
        states: list[Any] = []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            st = self.state[p]
            if len(st) == 0:
                st["step"] = 0
                st["path"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["rate"] = (
                    torch.ones_like(p, memory_format=torch.preserve_format)
                    if self.parameterwise
                    else torch.ones((), dtype=p.dtype, device=p.device)
                )
                self._init_extra(p, st)
            params.append(p)
            grads.append(cast(Tensor, p.grad))
            paths.append(st["path"])
            rates.append(st["rate"])
            states.append(st)
        if len(params) == len(ids):
            self._gathered[id(group)] = (ids, params, states, paths, rates)
        return params, grads, paths, rates, states

    def _init_extra(self, p: Tensor, st: dict[str, Any]) -> None:
        pass

    def _control(
        self, group: dict[str, Any], grads: list[Tensor], paths: list[Tensor], rates: list[Tensor]
    ) -> bool:
        foreach = use_foreach(group["foreach"], grads)
        fn = _multi_tensor_alera if foreach else _single_tensor_alera
        fn(
            grads,
            paths,
            rates,
            alpha=group["alpha"],
            C=group["C"],
            parameterwise=self.parameterwise,
            layerwise=group["layerwise"],
        )
        return foreach

    def effective_rates(self) -> list[tuple[float, int]]:
        """``(geometric-mean effective rate, size)`` per parameter tensor that has state."""
        out: list[tuple[float, int]] = []
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state.get(p)
                rate = st.get("rate") if st else None
                if rate is None:
                    out.append((float(group["lr"]), p.numel()))
                    continue
                log_mean = float(torch.log(rate.double().clamp_min(_TINY)).mean())
                out.append((float(group["lr"]) * math.exp(log_mean), p.numel()))
        return out


class ALERA(_AgnosticBase):
    r"""SGD with agnostic, layer-wise learning-rate adaptation (ALERA).

    .. math::
        \begin{aligned}
        &\textbf{input}: \eta_0 \text{ (lr)}, \alpha \text{ (alpha)}, C \text{ (C)}; \ p \leftarrow 0,
            \ \rho \leftarrow 1 \text{ per tensor} \\
        &\textbf{for}\ t = 1, 2, \dots, \text{ each tensor of size } d: \\
        &\quad p \leftarrow \alpha g/\lVert g\rVert + (1-\alpha) p \\
        &\quad \rho \leftarrow \rho \exp\big(C(\lVert p\rVert^2 - \mu)/\sigma(d)\big) \\
        &\quad \theta \leftarrow \theta - \eta_0 \rho\, g
        \end{aligned}

    Args:
        params: parameters or groups.
        lr: :math:`\eta_0` (default 0.01), the factor :class:`PageHinkley` divides.
        alpha: memory rate :math:`\alpha` (paper's robust value 0.01).
        C: factor :math:`C` (paper's robust value 3e-6).
        layerwise: one rate per tensor (default, the paper's experiments); ``False``: one rate for
            the whole model (Algorithm 1 as written, :math:`d` = all parameters).
        foreach: ``torch._foreach_*`` path (default: accelerators only).

    .. note::
        A tensor whose gradient is exactly zero keeps its rate direction undefined; we divide by
        :math:`\max(\lVert g\rVert, 10^{-30})` so its path simply decays.

    References:
        Schoenauer Sebag, Schoenauer, Sebag, arXiv:1709.01427 (2017), §2.1, eq. (2), (4)–(6).
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.01,
        alpha: float = 0.01,
        C: float = 3e-6,
        *,
        layerwise: bool = True,
        foreach: bool | None = None,
    ) -> None:
        _validate(lr, alpha, C)
        super().__init__(
            params, {"lr": lr, "alpha": alpha, "C": C, "layerwise": layerwise, "foreach": foreach}
        )

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, paths, rates, states = self._gather(group)
            if not params:
                continue
            foreach = self._control(group, grads, paths, rates)
            for st in states:
                st["step"] += 1
            if foreach:
                torch._foreach_add_(params, torch._foreach_mul(grads, rates), alpha=-group["lr"])
            else:
                for p, g, r in zip(params, grads, rates, strict=True):
                    p.add_(g * r, alpha=-group["lr"])
        return loss


class SPALERA(ALERA):
    r"""SGD with agnostic, parameter-wise learning-rate adaptation (SPALERA without the guard).

    .. math::
        \rho_i \leftarrow \rho_i \exp\big(C (p_i^2 - \mu')/\sigma'\big), \quad
        \mu' = \mu/d, \quad \sigma' = \sigma(d)/\sqrt d, \quad
        \theta \leftarrow \theta - \eta_0\, \rho \odot g

    with :math:`d` the size of the tensor (``layerwise=True``, default) or of the model.
    Same arguments as :class:`ALERA`.

    .. note::
        Appendix B's line 15 reads :math:`\eta_i \leftarrow \eta_0\eta_i\exp(\cdot)`; we read it as
        the effective rate :math:`\eta_0\rho_i` with multipliers :math:`\rho_i` starting at 1 (otherwise
        :math:`\eta_0` would compound at every step).

    References:
        Schoenauer Sebag, Schoenauer, Sebag, arXiv:1709.01427 (2017), eq. (7) and Appendix B.
    """

    parameterwise = True


class AgAdam(_AgnosticBase):
    r"""Adam whose rate is controlled by the agnostic (ALERA) rule: Ag-Adam.

    .. math::
        \begin{aligned}
        &m \leftarrow \beta_1 m + (1-\beta_1) g,\quad v \leftarrow \beta_2 v + (1-\beta_2) g^2 \\
        &p \leftarrow \alpha g/\lVert g\rVert + (1-\alpha) p,\quad
            \rho \leftarrow \rho \exp\big(C(\lVert p\rVert^2 - \mu)/\sigma(d)\big) \\
        &\theta \leftarrow \theta - \eta_0 \rho\, \frac{m/(1-\beta_1^t)}{\sqrt{v/(1-\beta_2^t)} + \epsilon}
        \end{aligned}

    Args:
        lr: :math:`\eta_0` (default 1e-3, Adam's); alpha, C, layerwise: as :class:`ALERA`;
        betas: Adam's (0.9, 0.999) (the paper keeps Adam's recommended values); eps: 1e-8.

    References:
        Schoenauer Sebag, Schoenauer, Sebag, arXiv:1709.01427 (2017), §3.1;
        D. Kingma, J. Ba, *Adam*, ICLR 2015.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        alpha: float = 0.01,
        C: float = 3e-6,
        *,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        layerwise: bool = True,
        foreach: bool | None = None,
    ) -> None:
        _validate(lr, alpha, C)
        if not (0.0 <= betas[0] < 1.0):
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not (0.0 <= betas[1] < 1.0):
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        check_positive("epsilon value", eps)
        defaults = {
            "lr": lr,
            "alpha": alpha,
            "C": C,
            "betas": betas,
            "eps": eps,
            "layerwise": layerwise,
            "foreach": foreach,
        }
        super().__init__(params, defaults)

    def _init_extra(self, p: Tensor, st: dict[str, Any]) -> None:
        st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, paths, rates, states = self._gather(group)
            if not params:
                continue
            foreach = self._control(group, grads, paths, rates)
            b1, b2 = group["betas"]
            ms = [st["exp_avg"] for st in states]
            vs = [st["exp_avg_sq"] for st in states]
            for st in states:
                st["step"] += 1
            t = states[0]["step"]
            bc1, bc2 = 1 - b1**t, 1 - b2**t
            if foreach:
                torch._foreach_lerp_(ms, grads, 1 - b1)
                torch._foreach_mul_(vs, b2)
                torch._foreach_addcmul_(vs, grads, grads, value=1 - b2)
                denom = torch._foreach_sqrt(vs)
                torch._foreach_div_(denom, math.sqrt(bc2))
                torch._foreach_add_(denom, group["eps"])
                upd = torch._foreach_div(ms, denom)
                torch._foreach_mul_(upd, rates)
                torch._foreach_add_(params, upd, alpha=-group["lr"] / bc1)
            else:
                for p, g, m, v, r in zip(params, grads, ms, vs, rates, strict=True):
                    m.lerp_(g, 1 - b1)
                    v.mul_(b2).addcmul_(g, g, value=1 - b2)
                    denom = (v.sqrt() / math.sqrt(bc2)).add_(group["eps"])
                    p.add_(m / denom * r, alpha=-group["lr"] / bc1)
        return loss

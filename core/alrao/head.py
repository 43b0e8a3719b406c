r"""Alrao output layer: N copies of the final layer with log-spaced rates, averaged by Switch."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from .optim import _validate_range
from .switch import Switch

__all__ = ["AlraoHead", "HeadOutput", "posterior_table", "preferred_lr"]

Task = Literal["classification", "regression"]
_LOG_2PI = math.log(2.0 * math.pi)


class HeadOutput:
    """What :meth:`AlraoHead.forward` returns.

    Attributes:
        loss: scalar to call ``backward()`` on: :math:`L_{avg} + \\sum_j L_j` (see AlraoHead).
        avg_nll: scalar, mean NLL of the averaged model on this batch (:math:`L_{avg}`). Detached.
        copy_loglik: ``(N,)`` mean log-likelihood of each copy on this batch, detached: feed it to
            ``head.switch.update`` after the optimizer step.
        avg_log_prob: classification: log-probabilities of the averaged model, ``(*lead, K)``;
            regression: the mixture's predictive mean, ``(*lead, D)``. Detached. Computed on
            first access: a training step never reads it, and it is a full extra pass over
            the ``(B, N, K)`` outputs of all copies.
    """

    __slots__ = ("_avg", "_avg_fn", "avg_nll", "copy_loglik", "loss")

    def __init__(
        self, loss: Tensor, avg_nll: Tensor, copy_loglik: Tensor, avg_fn: Callable[[], Tensor]
    ) -> None:
        self.loss = loss
        self.avg_nll = avg_nll
        self.copy_loglik = copy_loglik
        self._avg_fn: Callable[[], Tensor] | None = avg_fn
        self._avg: Tensor | None = None

    @property
    def avg_log_prob(self) -> Tensor:
        if self._avg is None:
            assert self._avg_fn is not None
            self._avg, self._avg_fn = self._avg_fn(), None
        return self._avg


def _copy_loglik_and_grad(logits: Tensor, y: Tensor, task: str) -> tuple[Tensor, Tensor]:
    """Per-copy per-sample log-likelihood ``(N, M)`` and ``d(-loglik)/d logits`` ``(N, K, M)``.

    ``logits`` is in the copy-major layout ``(N, K, M)`` (copies, outputs, samples); ``y`` is
    ``(M,)`` class indices or ``(M, D)`` regression targets.
    """
    if task == "classification":
        # Softmax over dim 1 with the M samples innermost: torch's CPU kernel for a softmax
        # over a short *last* dim (K ~ 10) is ~10x slower than over a middle dim.
        logp = torch.log_softmax(logits, dim=1)
        idx = y.view(1, 1, -1).expand(logits.shape[0], 1, -1)
        ll = logp.gather(1, idx).squeeze(1)
        g = logp.exp_()  # in place: logp is not needed any more
        g.scatter_add_(1, idx, torch.full_like(idx, -1, dtype=g.dtype))  # softmax - onehot
        return ll, g
    d = logits.shape[1] // 2
    mu, log_var = logits[:, :d], logits[:, d:]
    diff = y.t().unsqueeze(0) - mu  # (N, D, M)
    inv_var = torch.exp(-log_var)
    sq = diff * diff * inv_var
    ll = -0.5 * (d * _LOG_2PI + log_var.sum(1) + sq.sum(1))
    g = torch.cat([-diff * inv_var, 0.5 * (1.0 - sq)], dim=1)
    return ll, g


def _averaged_output(logits: Tensor, log_a: Tensor, task: str) -> Tensor:
    """Averaged model from copy-major ``(N, K, M)`` logits, returned sample-major ``(M, K|D)``.

    Classification: the mixture's log-probabilities; regression: the mixture mean. A copy whose
    outputs are not finite (it diverged at a rate too large for it) is left out of the mixture:
    it predicts nothing, rather than turning the average into NaN.
    """
    if task == "classification":
        logp = torch.nan_to_num(torch.log_softmax(logits, dim=1), nan=-math.inf)
        return torch.logsumexp(logp + log_a.view(-1, 1, 1), dim=0).t()
    d = logits.shape[1] // 2
    mu = logits[:, :d]
    alive = torch.isfinite(mu).all(1, keepdim=True)  # (N, 1, M)
    w = torch.where(alive, log_a.exp().view(-1, 1, 1), 0.0)
    w = w / w.sum(0, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)
    return (torch.where(alive, mu, 0.0) * w).sum(0).t()


def _all_copies(z: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Every copy's outputs in one matmul, copy-major: ``(N, K, M)`` from ``z`` ``(M, F)``."""
    n, k, f = weight.shape
    return torch.addmm(bias.reshape(n * k, 1), weight.reshape(n * k, f), z.t()).view(n, k, -1)


class _AlraoHeadLoss(torch.autograd.Function):
    """Fused Alrao output layer: one matmul for all copies, analytic gradients, routed.

    The ``N`` copies' weights ``(N, K, F)`` are one ``(N*K, F)`` matrix, so the forward is one
    ``addmm`` and the backward two ``mm`` (one for the body, one for all copies). Everything
    in between is in the copy-major layout ``(N, K, M)``.

    Forward returns ``(loss, avg_nll, copy_loglik, logits)``; only ``loss`` is differentiable.
    Backward: :math:`\\partial L_{avg}/\\partial \\text{logits}_j = r_j\\,\\partial(-\\ell_j)/\\partial
    \\text{logits}_j` reaches ``z`` only; :math:`\\partial L_j/\\partial \\text{logits}_j` reaches copy
    ``j``'s weight and bias only.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        z: Tensor,
        weight: Tensor,
        bias: Tensor,
        log_a: Tensor,
        y: Tensor,
        task: str,
        compiled: bool,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        guard = task == "regression"
        fwd = _compiled_forward() if compiled else _forward
        loss, avg_nll, copy_loglik, g_own, resp, logits = fwd(z, weight, bias, y, log_a, task, guard)
        ctx.save_for_backward(z, weight, g_own, resp)
        ctx.set_materialize_grads(False)  # no zero tensors for the non-differentiable outputs
        ctx.guard = guard  # type: ignore[attr-defined]
        ctx.compiled = compiled  # type: ignore[attr-defined]
        ctx.mark_non_differentiable(avg_nll, copy_loglik, logits)
        return loss, avg_nll, copy_loglik, logits

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_loss: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
        z, weight, g_own, resp = ctx.saved_tensors
        if grad_loss is None:  # only reached through a non-differentiable output
            return None, None, None, None, None, None, None
        need = ctx.needs_input_grad
        bwd = _compiled_backward() if ctx.compiled else _backward
        grad_z, grad_w, grad_b = bwd(z, weight, g_own, resp, grad_loss, ctx.guard, need[0], need[1], need[2])
        return grad_z, grad_w, grad_b, None, None, None, None


def _forward(
    z: Tensor, weight: Tensor, bias: Tensor, y: Tensor, log_a: Tensor, task: str, guard: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The fused head's forward: (loss, avg_nll, copy_loglik, d(-l)/d logits, resp, logits)."""
    logits = _all_copies(z, weight, bias)
    return (*_forward_math(logits, y, log_a, task, guard), logits)


def _backward(
    z: Tensor,
    weight: Tensor,
    g_own: Tensor,
    resp: Tensor,
    grad_loss: Tensor,
    guard: bool,
    need_z: bool,
    need_w: bool,
    need_b: bool,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Gradients of the loss for the body's features, the copies' weights and biases."""
    n, k, f = weight.shape
    m = z.shape[0]
    scale = grad_loss / m
    # The 1/B scale is applied to the small tensors (resp, and the (N*K, F) and (N, K)
    # results), never to the (N, K, B) gradient: one less pass over the largest tensor.
    grad_z = grad_w = grad_b = None
    if need_z:
        g_avg = _backward_math(g_own, resp, scale, guard)
        w = weight
        if guard:
            # and a diverged copy's NaN weights must not reach the body through the matmul.
            w = torch.nan_to_num(weight, nan=0.0, posinf=0.0, neginf=0.0)
        grad_z = g_avg.reshape(n * k, m).t() @ w.reshape(n * k, f)
    if need_w:
        grad_w = (g_own.reshape(n * k, m) @ z).mul_(scale).view(n, k, f)
    if need_b:
        grad_b = g_own.sum(2).mul_(scale)
    return grad_z, grad_w, grad_b


def _forward_math(
    logits: Tensor, y: Tensor, log_a: Tensor, task: str, guard: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Elementwise part of the forward: (loss, avg_nll, copy_loglik, d(-l)/d logits, resp)."""
    ll, g_own = _copy_loglik_and_grad(logits, y, task)
    if guard:
        # A diverged copy (non-finite likelihood) gets zero responsibility: the averaged
        # model, and so the body's gradient, ignore it (see _averaged_output).
        ll = torch.nan_to_num(ll, nan=-math.inf, posinf=-math.inf)
    mix = ll + log_a.view(-1, 1)  # (N, M)
    # logsumexp over the copies and the responsibilities r[j, i] = exp(mix - lse), sharing
    # one exp (torch.logsumexp runs its own max/exp/sum/log, and resp would need another exp)
    top = mix.amax(dim=0)
    if guard:  # every copy dead for a sample: keep lse = -inf rather than NaN
        top = top.clamp_min(torch.finfo(top.dtype).min)
    resp = (mix - top).exp_()
    total = resp.sum(dim=0)
    resp.div_(total)
    lse = total.log_().add_(top)
    avg_nll = -lse.mean()
    copy_loglik = ll.mean(1)
    return avg_nll - copy_loglik.sum(), avg_nll, copy_loglik, g_own, resp


def _backward_math(g_own: Tensor, resp: Tensor, scale: Tensor, guard: bool) -> Tensor:
    """r_j * d(-l_j)/d logits_j / B: what reaches the body, ``(N, K, M)``."""
    g_avg = g_own * (resp * scale).unsqueeze(1)
    if guard:
        # 0 responsibility times a diverged copy's NaN gradient must be 0.
        g_avg = torch.nan_to_num(g_avg, nan=0.0, posinf=0.0, neginf=0.0)
    return g_avg


@functools.cache
def _compiled_forward() -> Callable[..., tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]]:
    return torch.compile(_forward, dynamic=None)


@functools.cache
def _compiled_backward() -> Callable[..., tuple[Tensor | None, Tensor | None, Tensor | None]]:
    return torch.compile(_backward, dynamic=None)


class AlraoHead(nn.Module):
    r"""Alrao output layer: ``num_copies`` copies of the final linear layer, Switch-averaged.

    Copy :math:`j = 1..N` is trained with the fixed rate
    :math:`\log\eta_j = \log\eta_{\min} + \frac{j-1}{N-1}(\log\eta_{\max} - \log\eta_{\min})`
    (:meth:`copy_rates`; the optimizer takes them from :meth:`param_group`). With per-copy
    per-sample log-likelihoods :math:`\ell_j(i)` and Switch weights :math:`a_j`:

    .. math::
        \begin{aligned}
            L_{avg} &= -\frac{1}{B}\sum_i \log\sum_j a_j\, e^{\ell_j(i)}, \qquad
            L_j = -\frac{1}{B}\sum_i \ell_j(i) \\
            \text{loss} &= L_{avg}\big|_{\theta^{cl}\ \text{const}} +
                \sum_j L_j\big|_{z\ \text{const}}
        \end{aligned}

    so ``loss.backward()`` gives the body exactly :math:`\partial L_{avg}/\partial z` and copy
    ``j`` exactly :math:`\partial L_j/\partial \theta_j` (the paper's Algorithm 1).
    Classification: copy j is a softmax over ``out_features`` classes. Regression: copy j
    outputs a Gaussian mean and log-variance per output dimension (``2 * out_features``
    outputs: means first, then log-variances) and :math:`\ell_j` is its log-density.

    Args:
        in_features: width ``F`` of the body's features ``z``.
        out_features: classes ``K`` (classification) or output dimensions ``D`` (regression).
        num_copies: number of copies ``N`` (>= 2; the paper uses 10 on CIFAR-10, 6 on PTB).
        lr_min, lr_max: the Alrao range, shared with the body's optimizer.
        task: ``"classification"`` or ``"regression"``.
        theta: Switch prior (see :class:`Switch`; paper 0.999).
        impl: ``"fast"`` (default: one fused :class:`torch.autograd.Function`, one matmul for all
            copies, analytic gradients) or ``"reference"`` (a plain autograd loop over copies).
        compile: run the fast path's forward (the matmul and the elementwise maths) and its
            backward (the routed gradient and both matmuls) through ``torch.compile``, which
            fuses the elementwise ops and removes per-op dispatch. Off by default: each new
            batch shape pays a compilation of several seconds on CPU, and on the CPU machine
            the compiled head measured no faster per step than the eager one, so it never pays
            back over a screening run (figures in docs/benchmarks.md). Opt-in for devices
            where it does.
        device, dtype: factory kwargs for the weights.

    Call order in a training step: ``out = head(z, y)``, ``out.loss.backward()``,
    ``opt.step()``, then ``head.switch.update(out.copy_loglik)``: the forward uses the current
    posterior and the posterior is updated after the step, as in Algorithm 1 of the paper.

    .. note::
        The copies' rates are applied by the Alrao optimizer (group ``fixed_rates``), not by
        the head; the head only routes gradients. The body's gradient is computed from the
        averaged model's loss with the *current* Switch weights held constant.

    .. note::
        Regression only: a copy whose likelihood is not finite (its rate made it diverge; the
        Gaussian NLL's gradient grows with 1/σ²) gets zero weight in the average and its NaNs
        are kept out of the body's gradient. Classification copies skip this guard (it costs
        a pass over the ``(B, N, K)`` outputs): a softmax copy's gradient is bounded by the
        features, so it cannot diverge unless the body does, and the run then stops as
        ``diverged``.

    .. note::
        ``avg_log_prob`` holds the mixture *mean* for regression (the averaged model's point
        prediction), not a log-probability.

    References:
        L. Blier, P. Wolinski, Y. Ollivier. Learning with Random Learning Rates. ECML-PKDD 2019.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        num_copies: int,
        lr_min: float,
        lr_max: float,
        task: Task = "classification",
        *,
        theta: float = 0.999,
        impl: Literal["fast", "reference"] = "fast",
        compile: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(in_features, int) or in_features < 1:
            raise ValueError(f"Invalid in_features: {in_features!r}")
        if not isinstance(out_features, int) or out_features < 1:
            raise ValueError(f"Invalid out_features: {out_features!r}")
        if not isinstance(num_copies, int) or num_copies < 2:
            raise ValueError(f"Invalid num_copies: {num_copies!r} (must be an int >= 2)")
        _validate_range(lr_min, lr_max)
        if task not in ("classification", "regression"):
            raise ValueError(f"Invalid task: {task!r} (classification or regression)")
        if impl not in ("fast", "reference"):
            raise ValueError(f"Invalid impl: {impl!r} (fast or reference)")
        self.in_features = in_features
        self.out_features = out_features
        self.num_copies = num_copies
        self.lr_min = float(lr_min)
        self.lr_max = float(lr_max)
        self.task: Task = task
        self.impl = impl
        k = out_features if task == "classification" else 2 * out_features
        factory: dict[str, Any] = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(num_copies, k, in_features, **factory))
        self.bias = nn.Parameter(torch.empty(num_copies, k, **factory))
        self.switch = Switch(num_copies, theta)
        if device is not None:
            self.switch.to(device)
        self.reset_parameters()
        self._loss_fn: Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor, Tensor]] = (
            self._fast_loss if impl == "fast" else self._reference_loss
        )
        self.compile_math = compile  # not `self.compile`: that is nn.Module.compile

    def reset_parameters(self) -> None:
        """Initialise every copy independently, like ``nn.Linear``."""
        bound = 1.0 / math.sqrt(self.in_features)
        with torch.no_grad():
            for j in range(self.num_copies):
                nn.init.kaiming_uniform_(self.weight[j], a=math.sqrt(5))
                nn.init.uniform_(self.bias[j], -bound, bound)

    # -- rates and optimizer group --------------------------------------------------------------
    def copy_rates(self) -> Tensor:
        """The copies' fixed rates, log-spaced from ``lr_min`` to ``lr_max``, float64 ``(N,)``."""
        frac = torch.arange(self.num_copies, dtype=torch.float64) / (self.num_copies - 1)
        log_min, log_max = math.log(self.lr_min), math.log(self.lr_max)
        rates = torch.exp(log_min + frac * (log_max - log_min))
        rates[0], rates[-1] = self.lr_min, self.lr_max  # exact end points
        return rates

    def param_group(self) -> dict[str, Any]:
        """Optimizer group for the copies: one 'feature' per copy, with the fixed rates."""
        return {
            "params": [self.weight, self.bias],
            "feature_dims": [0, 0],
            "gate_counts": [1, 1],
            "num_features": self.num_copies,
            "fixed_rates": self.copy_rates().tolist(),
            "kind": "alrao_head",
        }

    # -- forward --------------------------------------------------------------------------------
    def _flatten(self, z: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor | None, tuple[int, ...]]:
        if z.dim() < 2 or z.shape[-1] != self.in_features:
            raise ValueError(f"z must be (..., {self.in_features}), got {tuple(z.shape)}")
        lead = tuple(z.shape[:-1])
        # (B, F) inputs pass as they are: a reshape would add a view and its autograd node
        z2 = z if z.dim() == 2 else z.reshape(-1, self.in_features)
        if y is None:
            return z2, None, lead
        if self.task == "classification":
            if tuple(y.shape) != lead:
                raise ValueError(f"y must have shape {lead}, got {tuple(y.shape)}")
            return z2, y if y.dim() == 1 else y.reshape(-1), lead
        d = self.out_features
        if tuple(y.shape) == (*lead, d):
            return z2, y.reshape(-1, d).to(z.dtype), lead
        if d == 1 and tuple(y.shape) == lead:
            return z2, y.reshape(-1, 1).to(z.dtype), lead
        raise ValueError(f"y must have shape {(*lead, d)}, got {tuple(y.shape)}")

    def _fast_loss(self, z2: Tensor, y2: Tensor, log_a: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(loss, avg_nll, copy_loglik, logits of all copies (detached, ``(N, K, M)``))."""
        out = _AlraoHeadLoss.apply(z2, self.weight, self.bias, log_a, y2, self.task, self.compile_math)
        return out

    def _copy_loglik(self, out: Tensor, y2: Tensor) -> Tensor:
        if self.task == "classification":
            return -F.cross_entropy(out, y2, reduction="none")
        d = self.out_features
        mu, log_var = out[:, :d], out[:, d:]
        return -0.5 * (_LOG_2PI + log_var + (y2 - mu) ** 2 * torch.exp(-log_var)).sum(-1)

    def _reference_loss(self, z2: Tensor, y2: Tensor, log_a: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        avg_ll, own_losses, avg_logits = [], [], []
        for j in range(self.num_copies):
            out_avg = F.linear(z2, self.weight[j].detach(), self.bias[j].detach())  # body's path
            out_own = F.linear(z2.detach(), self.weight[j], self.bias[j])  # copy j's path
            avg_ll.append(self._copy_loglik(out_avg, y2))
            own_losses.append(-self._copy_loglik(out_own, y2).mean())
            avg_logits.append(out_avg.detach().t())
        avg_nll = -torch.logsumexp(torch.stack(avg_ll, 1) + log_a.view(1, -1), dim=1).mean()
        loss = avg_nll + torch.stack(own_losses).sum()
        return loss, avg_nll.detach(), -torch.stack(own_losses).detach(), torch.stack(avg_logits)

    def forward(self, z: Tensor, y: Tensor) -> HeadOutput:
        """Loss with Alrao's gradient routing; ``z`` is ``(B, F)`` or ``(B, T, F)`` (flattened)."""
        z2, y2, lead = self._flatten(z, y)
        assert y2 is not None
        log_a = self.switch.log_posterior(z.dtype)
        loss, avg_nll, copy_ll, logits = self._loss_fn(z2, y2, log_a)
        task = self.task

        def average() -> Tensor:
            avg = _averaged_output(logits, log_a, task)
            return avg.reshape(*lead, avg.shape[-1])

        return HeadOutput(loss=loss, avg_nll=avg_nll, copy_loglik=copy_ll, avg_fn=average)

    def predict(self, z: Tensor) -> Tensor:
        """Averaged model without targets: log-probs ``(*lead, K)`` or mixture mean ``(*lead, D)``."""
        z2, _, lead = self._flatten(z, None)
        logits = _all_copies(z2, self.weight, self.bias)
        out = _averaged_output(logits, self.switch.log_posterior(z.dtype), self.task)
        return out.reshape(*lead, out.shape[-1])

    def copy_logits(self, z: Tensor) -> Tensor:
        """Raw outputs of every copy, ``(*lead, N, K)`` (K = 2D for regression)."""
        z2, _, lead = self._flatten(z, None)
        out = torch.einsum("mf,nkf->mnk", z2, self.weight) + self.bias
        return out.reshape(*lead, self.num_copies, -1)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"num_copies={self.num_copies}, lr_min={self.lr_min}, lr_max={self.lr_max}, "
            f"task={self.task!r}, impl={self.impl!r}"
        )


def preferred_lr(head: AlraoHead) -> float:
    """Posterior-weighted geometric mean of the copies' rates, :math:`\\exp\\sum_j a_j\\log\\eta_j`."""
    a = head.switch.posterior().cpu()
    return float(torch.exp((a * head.copy_rates().log()).sum()))


def posterior_table(head: AlraoHead) -> list[dict[str, float]]:
    """One row per copy: its rate and its current Switch weight."""
    a = head.switch.posterior().cpu().tolist()
    return [{"lr": lr, "weight": w} for lr, w in zip(head.copy_rates().tolist(), a, strict=True)]

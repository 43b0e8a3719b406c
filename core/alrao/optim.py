r"""Alrao optimizers: SGD and Adam with one fixed random learning rate per feature.

Both optimizers share one structure (the "optax chain" idea): a *direction* is computed
exactly as the base optimizer would with a learning rate of 1, then one shared per-feature
scaling :math:`\theta \leftarrow \theta - \eta_f \cdot d` is applied. The scaling is written
once (:func:`_single_tensor_apply_rates` / :func:`_multi_tensor_apply_rates`).

Each algorithm has a readable reference implementation (``_single_tensor_*``, a loop over
tensors) and a fast path (``_multi_tensor_*``, ``torch._foreach_*`` ops over all parameters of
all groups at once) with the same signature; they agree in float64.

``step()`` does not rebuild its per-group lists every step: the parameters, their rate and step
tensors are flattened once into buckets of equal hyperparameters and reused until
``param_groups`` change (see :meth:`_AlraoOptimizer._buckets`). The cached tensors are the ones
in ``optimizer.state``, so ``state_dict()`` and ``load_state_dict()`` behave as before.

The rates are drawn once, at construction; :meth:`_AlraoOptimizer.redraw_rates` draws the
body's anew in another range (in place; off the paper, see ``AlraoScreener(recentre_after=...)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor
from torch.optim import Optimizer

from archscreen.core.foreach import use_foreach

from .grouping import rate_shape

__all__ = ["AlraoAdam", "AlraoSGD", "alrao_adam", "alrao_sgd"]

_TensorList = list[Tensor]


def _step_dtype(p: Tensor) -> torch.dtype:
    # float64 params get a float64 step so that float64 runs match torch.optim bit for bit in
    # the bias corrections; otherwise float32 (exact up to 2**24 steps; never bf16/fp16).
    return torch.float64 if p.dtype == torch.float64 else torch.float32


def _validate_range(lr_min: float, lr_max: float) -> None:
    if not (isinstance(lr_min, int | float) and math.isfinite(lr_min) and lr_min > 0.0):
        raise ValueError(f"Invalid lr_min: {lr_min} (must be a finite number > 0)")
    if not (isinstance(lr_max, int | float) and math.isfinite(lr_max) and lr_max >= lr_min):
        raise ValueError(f"Invalid lr_max: {lr_max} (must be finite and >= lr_min={lr_min})")


def _laid_out(rates: Tensor, gate_count: int, shape: tuple[int, ...], like: Tensor) -> Tensor:
    """One parameter's rate tensor from its group's ``num_features`` rates: repeated once per gate
    (a recurrent unit's gate rows share its rate), shaped to broadcast against the parameter
    (:func:`rate_shape`), in ``like``'s dtype and device."""
    return rates.repeat(gate_count).reshape(shape).to(dtype=like.dtype, device=like.device)


def draw_log_uniform(num: int, lr_min: float, lr_max: float, generator: torch.Generator) -> Tensor:
    r"""``num`` float64 rates with :math:`\log\eta \sim U(\log\eta_{\min}, \log\eta_{\max})`.

    Written as :math:`\eta_{\min}\exp(u\log(\eta_{\max}/\eta_{\min}))` so that
    ``lr_min == lr_max`` gives exactly ``lr_min``.
    """
    u = torch.rand(num, generator=generator, dtype=torch.float64)
    return lr_min * torch.exp(u * math.log(lr_max / lr_min))


# --------------------------------------------------------------------------------------------
# the one shared per-feature scaling
# --------------------------------------------------------------------------------------------
def _single_tensor_apply_rates(params: _TensorList, lrs: _TensorList, directions: _TensorList) -> None:
    for p, lr, d in zip(params, lrs, directions, strict=True):
        p.addcmul_(lr, d, value=-1.0)


def _multi_tensor_apply_rates(params: _TensorList, lrs: _TensorList, directions: _TensorList) -> None:
    # lr broadcasts against d (size 1 off the feature dim): exact, but foreach kernels take their
    # per-tensor route for this op on accelerators; materialising full-size rates would cost a
    # parameter-sized buffer per tensor.
    torch._foreach_addcmul_(params, lrs, directions, value=-1.0)


# --------------------------------------------------------------------------------------------
# base class
# --------------------------------------------------------------------------------------------
@dataclass
class _Bucket:
    """All parameters (of every group) that share one set of hyperparameters, flattened.

    ``params``/``states``/``lrs``/``steps`` are parallel lists in group order. They are built
    once and reused across steps (see :meth:`_AlraoOptimizer._buckets`): the tensors in them
    are the very ones held in ``optimizer.state``, updated in place, so ``state_dict()`` sees
    every update.
    """

    hyper: tuple[Any, ...]
    foreach: bool
    params: list[Tensor] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)
    lrs: list[Tensor] = field(default_factory=list)
    steps: list[Tensor] = field(default_factory=list)


class _AlraoOptimizer(Optimizer):
    """Common machinery: group validation, eager rate draw, rate-aware ``load_state_dict``,
    and the flat per-bucket lists that ``step()`` reuses between steps."""

    # the hyperparameters of a group that decide how it is updated (subclasses)
    _hyper_keys: tuple[str, ...] = ()

    def __init__(
        self,
        params: Iterable[dict[str, Any]],
        defaults: dict[str, Any],
        lr_min: float,
        lr_max: float,
        seed: int,
    ) -> None:
        _validate_range(lr_min, lr_max)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"Invalid seed: {seed!r} (must be an int)")
        self._generator = torch.Generator(device="cpu")
        self._generator.manual_seed(seed)
        defaults = {**defaults, "lr_min": float(lr_min), "lr_max": float(lr_max), "seed": seed}
        self._bucket_cache: tuple[tuple[Any, ...], list[_Bucket]] | None = None
        super().__init__(params, defaults)

    # -- groups and rates ----------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Validate an Alrao group, add it, and draw (or take) its per-feature rates."""
        if not isinstance(param_group, dict):
            raise ValueError(
                "Invalid param group: Alrao optimizers take dict groups from alrao_param_groups() "
                f"or AlraoHead.param_group(), got {type(param_group).__name__}"
            )
        params = param_group.get("params")
        plist = [params] if isinstance(params, Tensor) else list(params or [])
        for key in ("feature_dims", "num_features"):
            if key not in param_group:
                raise ValueError(f"Invalid param group: missing key {key!r} (use alrao_param_groups())")
        group = dict(param_group)
        group["params"] = plist
        group.setdefault("gate_counts", [1] * len(plist))
        group.setdefault("kind", "custom")
        n = group["num_features"]
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"Invalid num_features: {n!r}")
        if len(group["feature_dims"]) != len(plist) or len(group["gate_counts"]) != len(plist):
            raise ValueError("Invalid param group: feature_dims and gate_counts need one entry per param")
        shapes = [
            rate_shape(p, fd, gc, n)
            for p, fd, gc in zip(plist, group["feature_dims"], group["gate_counts"], strict=True)
        ]
        if "fixed_rates" in group:
            fixed = torch.as_tensor(group["fixed_rates"], dtype=torch.float64)
            if fixed.shape != (n,) or not bool(torch.all(torch.isfinite(fixed) & (fixed > 0))):
                raise ValueError(
                    f"Invalid fixed_rates: need {n} finite positive rates, got {group['fixed_rates']}"
                )
            rates = fixed
        else:
            lr_min = group.get("lr_min", self.defaults["lr_min"])
            lr_max = group.get("lr_max", self.defaults["lr_max"])
            _validate_range(lr_min, lr_max)
            rates = draw_log_uniform(n, lr_min, lr_max, self._generator)
        super().add_param_group(group)
        self._bucket_cache = None
        # Eager state (torch creates state lazily at the first step): the rates are part of the
        # model's initialisation. Drawing them here, in group order, makes them depend only on
        # the seed (not on which parameters get gradients first) and makes a state_dict taken
        # before the first step already carry them.
        for p, gc, shape in zip(plist, group["gate_counts"], shapes, strict=True):
            self.state[p]["lr"] = _laid_out(rates, gc, shape, p)
            self.state[p]["step"] = torch.zeros((), dtype=_step_dtype(p), device=p.device)

    def redraw_rates(self, lr_min: float, lr_max: float, groups: Iterable[int] | None = None) -> None:
        r"""Draw the per-feature rates of ``groups`` anew, log-uniformly in ``(lr_min, lr_max)``.

        Args:
            lr_min, lr_max: the new range (validated as the constructor's: finite,
                ``0 < lr_min <= lr_max``).
            groups: indices into ``param_groups``; ``None`` (default) means every group without
                ``fixed_rates``, i.e. the body. A group with ``fixed_rates`` (the output copies,
                ``kind="alrao_head"``) is refused with ``ValueError``: its rates are the copies'
                log-spaced grid, not a draw.

        The rates come from the optimizer's own seeded generator, one group after another in
        ``param_groups`` order (whatever the order of ``groups``), so they depend only on the
        seed and on the draws before them. Each group's ``lr_min``/``lr_max`` become the new
        range, so ``state_dict()`` records it.

        The rates are written *in place* into the existing ``state[p]["lr"]`` tensors (laid out
        exactly as at construction), so the flat lists ``step()`` reuses keep pointing at them
        and a ``state_dict`` taken afterwards holds the new rates. Everything else is left as
        it is: the step counts, the momentum buffers and Adam's moments. That is exact, not an
        approximation: Alrao computes the base optimizer's direction at rate 1 and only then
        scales it by :math:`\eta_f`, so no moment or buffer depends on the rate.

        Nothing is changed when an argument is invalid (all checks run before the first draw).
        """
        _validate_range(lr_min, lr_max)
        if groups is None:
            chosen = [i for i, g in enumerate(self.param_groups) if "fixed_rates" not in g]
        else:
            chosen = []
            for i in groups:
                if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(self.param_groups):
                    raise ValueError(
                        f"Invalid group index: {i!r} (the optimizer has {len(self.param_groups)} groups)"
                    )
                if "fixed_rates" in self.param_groups[i]:
                    raise ValueError(
                        f"Invalid group index: {i} has fixed_rates (kind "
                        f"{self.param_groups[i].get('kind')!r}); its rates are not redrawn"
                    )
                if i in chosen:
                    raise ValueError(f"Invalid group index: {i} given twice")
                chosen.append(i)
            chosen.sort()
        for i in chosen:
            group = self.param_groups[i]
            n = group["num_features"]
            rates = draw_log_uniform(n, lr_min, lr_max, self._generator)
            for p, fd, gc in zip(group["params"], group["feature_dims"], group["gate_counts"], strict=True):
                lr = self.state[p]["lr"]
                new = _laid_out(rates, gc, rate_shape(p, fd, gc, n), lr)
                if new.shape != lr.shape:  # never for state built or loaded by this class
                    raise RuntimeError(
                        f"per-feature 'lr' has shape {tuple(lr.shape)}, expected {tuple(new.shape)}"
                    )
                lr.copy_(new)
            group["lr_min"], group["lr_max"] = float(lr_min), float(lr_max)

    def feature_rates(self) -> list[Tensor]:
        """Per group (in order), the ``num_features`` per-unit rates (copies, for inspection)."""
        out: list[Tensor] = []
        for group in self.param_groups:
            lr = self.state[group["params"][0]]["lr"]
            out.append(lr.detach().reshape(-1)[: group["num_features"]].clone())
        return out

    # -- persistence ---------------------------------------------------------------------------
    def _check_saved_rates(self, state_dict: dict[str, Any]) -> None:
        saved_groups = state_dict.get("param_groups", [])
        if len(saved_groups) != len(self.param_groups):
            return  # torch's own check raises a ValueError for this
        states = state_dict.get("state", {})
        for gi, (cur, saved) in enumerate(zip(self.param_groups, saved_groups, strict=True)):
            if len(cur["params"]) != len(saved["params"]):
                return  # torch's own check
            for p, idx, fd, gc in zip(
                cur["params"], saved["params"], saved["feature_dims"], saved["gate_counts"], strict=True
            ):
                try:
                    expected = rate_shape(p, fd, gc, saved["num_features"])
                except ValueError as err:
                    raise ValueError(
                        f"load_state_dict: group {gi} does not fit the parameters: {err}"
                    ) from err
                lr = states.get(idx, {}).get("lr")
                if lr is None:
                    raise ValueError(f"load_state_dict: missing per-feature 'lr' for parameter {idx}")
                if tuple(lr.shape) != expected:
                    raise ValueError(
                        f"load_state_dict: per-feature 'lr' of parameter {idx} has shape {tuple(lr.shape)}, "
                        f"expected {expected} for a parameter of shape {tuple(p.shape)}"
                    )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load state; checks every per-feature rate tensor against its parameter first."""
        self._check_saved_rates(state_dict)
        self._bucket_cache = None  # the state tensors are replaced
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state[p]
                st["step"] = st["step"].to(dtype=_step_dtype(p), device=p.device)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._bucket_cache = None

    # -- flat lists reused across steps ----------------------------------------------------------
    def _buckets(self) -> list[_Bucket]:
        """Parameters bucketed by hyperparameters, with their rate and step tensors.

        Rebuilt only when the signature changes: the parameters of each group (by identity)
        and the hyperparameters in ``_hyper_keys`` plus ``foreach`` (a tuner may change those
        between steps). ``add_param_group``, ``load_state_dict`` and unpickling drop the cache,
        since they replace groups or state tensors. Replacing a tensor of ``optimizer.state``
        by hand (rather than updating it in place) is not supported between steps.
        """
        keys = self._hyper_keys
        sig = tuple(
            (tuple(map(id, g["params"])), g["foreach"], *(g[k] for k in keys)) for g in self.param_groups
        )
        cache = self._bucket_cache
        if cache is not None and cache[0] == sig:
            return cache[1]
        buckets: dict[tuple[Any, ...], _Bucket] = {}
        for group in self.param_groups:
            params = group["params"]
            if not params:
                continue
            foreach = use_foreach(group["foreach"], params)
            hyper = tuple(group[k] for k in keys)
            b = buckets.setdefault((*hyper, foreach), _Bucket(hyper, foreach))
            for p in params:
                st = self.state[p]
                b.params.append(p)
                b.states.append(st)
                b.lrs.append(st["lr"])
                b.steps.append(st["step"])
        out = list(buckets.values())
        self._bucket_cache = (sig, out)
        return out

    def _with_grads(self, b: _Bucket, name: str) -> tuple[_Bucket, list[Tensor]] | None:
        """``b`` and its gradients, or the sub-bucket of parameters that have one (None: none)."""
        grads = [p.grad for p in b.params]
        if any(g is None for g in grads):
            keep = [i for i, g in enumerate(grads) if g is not None]
            if not keep:
                return None
            b = _Bucket(
                b.hyper,
                b.foreach,
                [b.params[i] for i in keep],
                [b.states[i] for i in keep],
                [b.lrs[i] for i in keep],
                [b.steps[i] for i in keep],
            )
            grads = [grads[i] for i in keep]
        dense = cast(list[Tensor], grads)
        if any(g.is_sparse for g in dense):
            raise RuntimeError(f"{name} does not support sparse gradients")
        return b, dense


# --------------------------------------------------------------------------------------------
# SGD
# --------------------------------------------------------------------------------------------
class AlraoSGD(_AlraoOptimizer):
    r"""SGD with one random learning rate per feature (Alrao, Blier et al. 2019).

    .. math::
        \begin{aligned}
            &\eta_f \sim \log\mathcal{U}(\eta_{\min}, \eta_{\max})
                \text{ once per feature } f \text{ (or the group's fixed\_rates)} \\
            &\textbf{for } t = 1, 2, \ldots: \\
            &\quad g_t \leftarrow \nabla_\theta \ell_t(\theta_{t-1}) + \lambda\theta_{t-1} \\
            &\quad b_t \leftarrow g_t \text{ if } t = 1 \text{ else } \mu b_{t-1} + (1-\tau) g_t \\
            &\quad d_t \leftarrow g_t + \mu b_t \text{ (nesterov) else } b_t
                \quad (d_t = g_t \text{ if } \mu = 0) \\
            &\quad \theta_{t,f} \leftarrow \theta_{t-1,f} - \eta_f\, d_{t,f}
        \end{aligned}

    i.e. :class:`torch.optim.SGD` with ``lr=1`` followed by the per-feature scaling; with
    ``lr_min == lr_max`` it is exactly ``torch.optim.SGD(lr=lr_min)``.

    Args:
        params: parameter groups from :func:`alrao_param_groups` (and optionally
            :meth:`AlraoHead.param_group`, whose ``fixed_rates`` are used as they are).
        lr_min: lower end of the log-uniform range, > 0.
        lr_max: upper end, >= ``lr_min``.
        seed: seed of the CPU ``torch.Generator`` the rates are drawn from (group order, float64,
            then cast to each parameter's dtype and device). Same seed, same rates.
        momentum: momentum factor :math:`\mu` (default 0, the paper's setting).
        dampening: dampening :math:`\tau` for momentum (default 0).
        nesterov: Nesterov momentum (default False).
        weight_decay: L2 penalty :math:`\lambda` added to the gradient (default 0).
        foreach: ``None`` picks the ``torch._foreach_*`` path on accelerator tensors only (as
            torch.optim does); ``True``/``False`` force it.

    State per parameter: ``lr`` (the rates, shaped to broadcast: ``num_features*gate_count``
    along the feature dim, 1 elsewhere), ``step`` (a tensor, so that ``step()`` never syncs),
    ``momentum_buffer`` (after the first step with a gradient, when ``momentum != 0``).

    .. note::
        The rates are created eagerly at construction, unlike torch's lazy state, so that they
        depend on the seed only and are in every ``state_dict``. ``load_state_dict`` checks
        the shape of each saved rate tensor against its parameter and raises ``ValueError``
        on a mismatch.

    .. note::
        Momentum, dampening, Nesterov and weight decay are not in the paper (plain SGD); they
        default to off and act on the direction *before* the per-feature scaling.

    References:
        L. Blier, P. Wolinski, Y. Ollivier. Learning with Random Learning Rates. ECML-PKDD 2019.
    """

    _hyper_keys = ("momentum", "dampening", "nesterov", "weight_decay")

    def __init__(
        self,
        params: Iterable[dict[str, Any]],
        lr_min: float,
        lr_max: float,
        *,
        seed: int = 0,
        momentum: float = 0.0,
        dampening: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
    ) -> None:
        if not (momentum >= 0.0 and math.isfinite(momentum)):
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not (weight_decay >= 0.0 and math.isfinite(weight_decay)):
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not math.isfinite(dampening):
            raise ValueError(f"Invalid dampening value: {dampening}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Invalid nesterov: Nesterov momentum requires a momentum and zero dampening")
        defaults = {
            "momentum": momentum,
            "dampening": dampening,
            "nesterov": nesterov,
            "weight_decay": weight_decay,
            "foreach": foreach,
        }
        super().__init__(params, defaults, lr_min, lr_max, seed)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one optimization step (no host synchronisation)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for bucket in self._buckets():
            found = self._with_grads(bucket, "AlraoSGD")
            if found is None:
                continue
            b, grads = found
            momentum, dampening, nesterov, weight_decay = b.hyper
            bufs: list[Tensor | None] = (
                [st.get("momentum_buffer") for st in b.states] if momentum != 0 else [None] * len(grads)
            )
            alrao_sgd(
                b.params, grads, b.lrs, bufs, b.steps,
                momentum=momentum, dampening=dampening, nesterov=nesterov,
                weight_decay=weight_decay, foreach=b.foreach,
            )  # fmt: skip
            if momentum != 0:
                for st, buf in zip(b.states, bufs, strict=True):
                    st["momentum_buffer"] = buf
        return loss


def alrao_sgd(
    params: _TensorList,
    grads: _TensorList,
    lrs: _TensorList,
    momentum_buffer_list: list[Tensor | None],
    state_steps: _TensorList,
    *,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
    foreach: bool,
) -> None:
    """Functional API of :class:`AlraoSGD` (updates params, buffers and steps in place)."""
    fn = _multi_tensor_alrao_sgd if foreach else _single_tensor_alrao_sgd
    fn(
        params, grads, lrs, momentum_buffer_list, state_steps,
        momentum=momentum, dampening=dampening, nesterov=nesterov, weight_decay=weight_decay,
    )  # fmt: skip


def _single_tensor_alrao_sgd(
    params: _TensorList,
    grads: _TensorList,
    lrs: _TensorList,
    momentum_buffer_list: list[Tensor | None],
    state_steps: _TensorList,
    *,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
) -> None:
    directions: _TensorList = []
    for i, p in enumerate(params):
        state_steps[i].add_(1)
        d = grads[i] if weight_decay == 0 else grads[i].add(p, alpha=weight_decay)
        if momentum != 0:
            buf = momentum_buffer_list[i]
            if buf is None:
                buf = torch.clone(d).detach()
                momentum_buffer_list[i] = buf
            else:
                buf.mul_(momentum).add_(d, alpha=1 - dampening)
            d = d.add(buf, alpha=momentum) if nesterov else buf
        directions.append(d)
    _single_tensor_apply_rates(params, lrs, directions)


def _multi_tensor_alrao_sgd(
    params: _TensorList,
    grads: _TensorList,
    lrs: _TensorList,
    momentum_buffer_list: list[Tensor | None],
    state_steps: _TensorList,
    *,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
) -> None:
    if not params:
        return
    grouped = Optimizer._group_tensors_by_device_and_dtype(
        [params, grads, lrs, momentum_buffer_list, state_steps],  # type: ignore[list-item]
        with_indices=True,
    )
    for tensors, indices in grouped.values():
        dev_params, dev_grads, dev_lrs, dev_steps = (cast(_TensorList, tensors[i]) for i in (0, 1, 2, 4))
        dev_bufs = cast(list[Tensor | None], tensors[3])
        torch._foreach_add_(dev_steps, 1)
        if weight_decay != 0:
            dirs = list(torch._foreach_add(dev_grads, dev_params, alpha=weight_decay))
        else:
            dirs = list(dev_grads)
        if momentum != 0:
            bufs: _TensorList = []
            if all(b is not None for b in dev_bufs):
                bufs = cast(_TensorList, list(dev_bufs))
                torch._foreach_mul_(bufs, momentum)
                torch._foreach_add_(bufs, dirs, alpha=1 - dampening)
            else:
                for j, maybe_buf in enumerate(dev_bufs):
                    if maybe_buf is None:
                        buf = torch.clone(dirs[j]).detach()
                        momentum_buffer_list[indices[j]] = buf
                    else:
                        buf = maybe_buf.mul_(momentum).add_(dirs[j], alpha=1 - dampening)
                    bufs.append(buf)
            dirs = list(torch._foreach_add(dirs, bufs, alpha=momentum)) if nesterov else bufs
        _multi_tensor_apply_rates(dev_params, dev_lrs, dirs)


# --------------------------------------------------------------------------------------------
# Adam
# --------------------------------------------------------------------------------------------
class AlraoAdam(_AlraoOptimizer):
    r"""Adam with one random learning rate per feature ("Alrao-Adam", Blier et al. 2019).

    .. math::
        \begin{aligned}
            &\eta_f \sim \log\mathcal{U}(\eta_{\min}, \eta_{\max})
                \text{ once per feature } f \text{ (or the group's fixed\_rates)} \\
            &\textbf{for } t = 1, 2, \ldots: \\
            &\quad g_t \leftarrow \nabla_\theta \ell_t(\theta_{t-1}) + \lambda\theta_{t-1} \\
            &\quad m_t \leftarrow \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
                   v_t \leftarrow \beta_2 v_{t-1} + (1-\beta_2) g_t^2 \\
            &\quad d_t \leftarrow \frac{m_t / (1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon} \\
            &\quad \theta_{t,f} \leftarrow \theta_{t-1,f} - \eta_f\, d_{t,f}
        \end{aligned}

    i.e. :class:`torch.optim.Adam` with ``lr=1`` followed by the per-feature scaling; with
    ``lr_min == lr_max`` it equals ``torch.optim.Adam(lr=lr_min)`` up to float rounding.

    Args:
        params: parameter groups from :func:`alrao_param_groups` (and optionally
            :meth:`AlraoHead.param_group`, whose ``fixed_rates`` are used as they are).
        lr_min: lower end of the log-uniform range, > 0.
        lr_max: upper end, >= ``lr_min``.
        seed: seed of the CPU ``torch.Generator`` the rates are drawn from.
        betas: :math:`(\beta_1, \beta_2)`, each in [0, 1) (default (0.9, 0.999)).
        eps: :math:`\epsilon` added to the denominator (default 1e-8).
        weight_decay: L2 penalty :math:`\lambda` added to the gradient (default 0; not AdamW).
        foreach: ``None`` picks the ``torch._foreach_*`` path on accelerator tensors only;
            ``True``/``False`` force it.

    State per parameter: ``lr``, ``step`` (a tensor: the bias corrections are computed on the
    parameter's device, so ``step()`` never syncs), ``exp_avg``, ``exp_avg_sq`` (after the first
    step with a gradient).

    .. note::
        The rates are created eagerly at construction (see :class:`AlraoSGD`).

    .. note::
        The paper reports Alrao-Adam as much less reliable than Alrao-SGD (test loss can
        diverge while training looks fine); prefer :class:`AlraoSGD` for screening.

    References:
        L. Blier, P. Wolinski, Y. Ollivier. Learning with Random Learning Rates. ECML-PKDD 2019.
        D. P. Kingma, J. Ba. Adam: A Method for Stochastic Optimization. ICLR 2015.
    """

    _hyper_keys = ("betas", "eps", "weight_decay")

    def __init__(
        self,
        params: Iterable[dict[str, Any]],
        lr_min: float,
        lr_max: float,
        *,
        seed: int = 0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
    ) -> None:
        if len(betas) != 2:
            raise ValueError(f"Invalid betas: {betas} (need two values)")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        if not (eps >= 0.0 and math.isfinite(eps)):
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not (weight_decay >= 0.0 and math.isfinite(weight_decay)):
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = {"betas": tuple(betas), "eps": eps, "weight_decay": weight_decay, "foreach": foreach}
        super().__init__(params, defaults, lr_min, lr_max, seed)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """Perform one optimization step (no host synchronisation)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for bucket in self._buckets():
            found = self._with_grads(bucket, "AlraoAdam")
            if found is None:
                continue
            b, grads = found
            exp_avgs: _TensorList = []
            exp_avg_sqs: _TensorList = []
            for p, st in zip(b.params, b.states, strict=True):
                if "exp_avg" not in st:  # lazily, at the parameter's first gradient (as torch)
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                exp_avgs.append(st["exp_avg"])
                exp_avg_sqs.append(st["exp_avg_sq"])
            (beta1, beta2), eps, weight_decay = b.hyper
            alrao_adam(
                b.params, grads, b.lrs, exp_avgs, exp_avg_sqs, b.steps,
                beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay, foreach=b.foreach,
            )  # fmt: skip
        return loss


def alrao_adam(
    params: _TensorList,
    grads: _TensorList,
    lrs: _TensorList,
    exp_avgs: _TensorList,
    exp_avg_sqs: _TensorList,
    state_steps: _TensorList,
    *,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    foreach: bool,
) -> None:
    """Functional API of :class:`AlraoAdam` (updates params, moments and steps in place)."""
    fn = _multi_tensor_alrao_adam if foreach else _single_tensor_alrao_adam
    fn(
        params, grads, lrs, exp_avgs, exp_avg_sqs, state_steps,
        beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
    )  # fmt: skip


def _single_tensor_alrao_adam(
    params: _TensorList,
    grads: _TensorList,
    lrs: _TensorList,
    exp_avgs: _TensorList,
    exp_avg_sqs: _TensorList,
    state_steps: _TensorList,
    *,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
) -> None:
    directions: _TensorList = []
    for i, p in enumerate(params):
        grad = grads[i] if weight_decay == 0 else grads[i].add(p, alpha=weight_decay)
        exp_avg, exp_avg_sq, step = exp_avgs[i], exp_avg_sqs[i], state_steps[i]
        step.add_(1)
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        # bias corrections as device tensors: no .item(), no host sync
        bias_correction1 = 1 - torch.pow(beta1, step)
        bias_correction2_sqrt = (1 - torch.pow(beta2, step)).sqrt()
        denom = exp_avg_sq.sqrt().div_(bias_correction2_sqrt).add_(eps)
        directions.append(exp_avg.div(denom).div_(bias_correction1))
    _single_tensor_apply_rates(params, lrs, directions)


def _multi_tensor_alrao_adam(
    params: _TensorList,
    grads: _TensorList,
    lrs: _TensorList,
    exp_avgs: _TensorList,
    exp_avg_sqs: _TensorList,
    state_steps: _TensorList,
    *,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
) -> None:
    if not params:
        return
    grouped = Optimizer._group_tensors_by_device_and_dtype(
        [params, grads, lrs, exp_avgs, exp_avg_sqs, state_steps],  # type: ignore[list-item]
        with_indices=False,
    )
    for tensors, _ in grouped.values():
        dev_params, dev_grads, dev_lrs, dev_m, dev_v, dev_steps = (cast(_TensorList, t) for t in tensors)
        if weight_decay != 0:
            dev_grads = list(torch._foreach_add(dev_grads, dev_params, alpha=weight_decay))
        torch._foreach_add_(dev_steps, 1)
        torch._foreach_lerp_(dev_m, dev_grads, 1 - beta1)
        torch._foreach_mul_(dev_v, beta2)
        torch._foreach_addcmul_(dev_v, dev_grads, dev_grads, 1 - beta2)
        bc1 = list(torch._foreach_pow(beta1, dev_steps))
        torch._foreach_neg_(bc1)
        torch._foreach_add_(bc1, 1)
        bc2_sqrt = list(torch._foreach_pow(beta2, dev_steps))
        torch._foreach_neg_(bc2_sqrt)
        torch._foreach_add_(bc2_sqrt, 1)
        torch._foreach_sqrt_(bc2_sqrt)
        denom = list(torch._foreach_sqrt(dev_v))
        torch._foreach_div_(denom, bc2_sqrt)
        torch._foreach_add_(denom, eps)
        dirs = list(torch._foreach_div(dev_m, denom))
        torch._foreach_div_(dirs, bc1)
        _multi_tensor_apply_rates(dev_params, dev_lrs, dirs)

"""Small helpers shared by the tuner optimizers."""

from __future__ import annotations

import math
from typing import Any, cast

import torch
from torch import Tensor

from archscreen.core.foreach import use_foreach


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"Invalid {name}: {value} (must be a finite number {bound})")


def check_lr(lr: Any) -> None:
    if not (isinstance(lr, int | float) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"Invalid learning rate: {lr}")


def groups_signature(param_groups: list[dict[str, Any]]) -> tuple[tuple[int, ...], ...]:
    """Which parameters (by identity) each group holds: equal signatures, same flat lists."""
    return tuple(tuple(map(id, g["params"])) for g in param_groups)


def flat_params(optimizer: torch.optim.Optimizer) -> tuple[list[Tensor], bool]:
    """All parameters of all groups in order, and whether ``foreach`` applies by default to them.

    Built once and reused across steps until ``param_groups`` change (checked by identity on
    every call, which costs far less than rebuilding the lists and asking torch's foreach
    heuristic again). The result is shared: callers must not modify the list.
    """
    groups = optimizer.param_groups
    sig = groups_signature(groups)
    cached = optimizer.__dict__.get("_flat_params_cache")
    if cached is None or cached[0] != sig:
        params = [p for g in groups for p in g["params"]]
        cached = (sig, params, use_foreach(optimizer.defaults.get("foreach"), params))
        optimizer.__dict__["_flat_params_cache"] = cached
    return cached[1], cached[2]


def grads_of(params: list[Tensor], owner: str) -> tuple[list[Tensor], list[Tensor]]:
    """``params`` that have a gradient, and those gradients (dense only)."""
    grads = [p.grad for p in params]
    if any(g is None for g in grads):
        keep = [i for i, g in enumerate(grads) if g is not None]
        params = [params[i] for i in keep]
        grads = [grads[i] for i in keep]
    dense = cast(list[Tensor], grads)
    if any(g.is_sparse for g in dense):
        raise RuntimeError(f"{owner} does not support sparse gradients")
    return params, dense


def set_global_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr

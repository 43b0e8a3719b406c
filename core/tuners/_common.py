"""Small helpers shared by the tuner optimizers."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

try:  # private torch helper: foreach on accelerator tensors only, as torch.optim does
    from torch.optim.optimizer import _default_to_fused_or_foreach
except ImportError:  # pragma: no cover - very old / very new torch

    def _default_to_fused_or_foreach(
        params: list[Tensor], differentiable: bool, use_fused: bool = False
    ) -> tuple[bool, bool]:
        return False, all(p.device.type not in ("cpu", "meta") for p in params)


def use_foreach(foreach: bool | None, params: list[Tensor]) -> bool:
    """An explicit ``foreach`` is respected; by default only for accelerator tensors (never CPU)."""
    if foreach is not None:
        return bool(foreach)
    if not params:
        return False
    return _default_to_fused_or_foreach(params, False, False)[1]


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"Invalid {name}: {value} (must be a finite number {bound})")


def check_lr(lr: Any) -> None:
    if not (isinstance(lr, int | float) and not isinstance(lr, bool) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"Invalid learning rate: {lr}")


def params_with_grad(group: dict[str, Any]) -> tuple[list[Tensor], list[Tensor]]:
    params: list[Tensor] = []
    grads: list[Tensor] = []
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.grad.is_sparse:
            raise RuntimeError("tuner optimizers do not support sparse gradients")
        params.append(p)
        grads.append(p.grad)
    return params, grads


def set_global_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr

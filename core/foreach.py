"""Whether an optimizer step takes the ``torch._foreach_*`` fast path: one rule for every
optimizer of ours (the Alrao optimizers and the tuners), the one ``torch.optim`` applies."""

from __future__ import annotations

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

"""The model's loss at replaced weights, for the finite-difference tuners' trial points.

fd2 evaluates :math:`f(\\eta') = L(w - \\eta' u)` at five rates per update. These helpers give
that loss *functionally* (:func:`torch.func.functional_call`): the real weights are never
written, so the paper's "take the step, then cancel it" costs nothing, and the five points
share one dropout mask. Kept apart from the optimizers (which only call ``loss_at``) so that
:mod:`archscreen.core.tuners.fd` has no dependency on a model's forward signature.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["batched_functional_loss", "functional_loss", "vmappable"]


def functional_loss(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[list[Tensor]], Tensor]:
    """``loss_at(params)``: the model's loss on ``(x, y)`` with its parameters replaced.

    Evaluated with :func:`torch.func.functional_call`, so the real weights are never touched.
    ``params`` follow ``model.parameters()`` order and may be float64 (inputs, float targets and
    buffers are cast to match). Every call starts from the same random-number state (common
    dropout masks for the five trial points) and the global RNG is left as it was; buffers
    are cloned, so batch-norm running statistics are not updated.
    """
    names = [n for n, _ in model.named_parameters()]
    buffers = dict(model.named_buffers())
    device = x.device
    devices = [device] if device.type == "cuda" else []
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(device) if devices else None

    def loss_at(params: list[Tensor]) -> Tensor:
        if len(params) != len(names):
            raise ValueError(f"loss_at got {len(params)} tensors for {len(names)} parameters")
        dt = params[0].dtype
        xx = x.to(dt) if x.is_floating_point() else x
        yy = y.to(dt) if y.is_floating_point() else y
        bufs = {n: (b.to(dt) if b.is_floating_point() else b).clone() for n, b in buffers.items()}
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(cpu_state)
            if cuda_state is not None:
                torch.cuda.set_rng_state(cuda_state, device)
            out = torch.func.functional_call(
                model, {**dict(zip(names, params, strict=True)), **bufs}, (xx, yy)
            )
        return out.loss

    return loss_at


def vmappable(model: nn.Module) -> bool:
    """Whether ``torch.func.vmap`` can batch the model's forward over stacked weight sets.

    Not with buffers (batch-norm statistics) and not with recurrent layers: cuDNN's fused RNN
    kernels need weights with real storage (``flatten_parameters``), which a vmapped batch lacks.
    """
    has_buffers = any(True for _ in model.buffers())
    return not has_buffers and not any(isinstance(m, nn.RNNBase) for m in model.modules())


def batched_functional_loss(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[list[Tensor]], Tensor]:
    """Like :func:`functional_loss` for stacked weight sets (leading dim), via ``torch.func.vmap``.

    Requires a model without in-place buffer updates in its current mode (no training-mode
    batch norm); dropout uses the same mask for every weight set (``randomness="same"``).
    """
    names = [n for n, _ in model.named_parameters()]
    buffers = dict(model.named_buffers())

    def one(*params: Tensor) -> Tensor:
        dt = params[0].dtype
        xx = x.to(dt) if x.is_floating_point() else x
        yy = y.to(dt) if y.is_floating_point() else y
        bufs = {n: (b.to(dt) if b.is_floating_point() else b) for n, b in buffers.items()}
        out = torch.func.functional_call(model, {**dict(zip(names, params, strict=True)), **bufs}, (xx, yy))
        return out.loss

    batched = torch.func.vmap(one, randomness="same")
    devices = [x.device] if x.device.type == "cuda" else []

    def loss_at_batched(stacked: list[Tensor]) -> Tensor:
        with torch.random.fork_rng(devices=devices):
            return batched(*stacked)

    return loss_at_batched

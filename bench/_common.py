"""Helpers shared by the bench scripts (not part of the installed package)."""

from __future__ import annotations

import math
import platform
from collections.abc import Callable

import torch
from torch import nn


def machine_line() -> str:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    return (
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, device {dev}"
    )


def forward_macs(module: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass on ``example`` (Linear, Conv, LSTM/GRU)."""
    total = 0

    def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], output: object) -> None:
        nonlocal total
        x = inputs[0]
        if isinstance(mod, nn.Linear):
            total += x.numel() // x.shape[-1] * mod.in_features * mod.out_features
        elif isinstance(mod, nn.Conv1d | nn.Conv2d):
            assert isinstance(output, torch.Tensor)
            k = math.prod(mod.kernel_size)
            total += output.numel() * (mod.in_channels // mod.groups) * k
        elif isinstance(mod, nn.LSTM | nn.GRU):
            gates = 4 if isinstance(mod, nn.LSTM) else 3
            steps = x.shape[0] * x.shape[1]
            h = mod.hidden_size
            for layer in range(mod.num_layers):
                inp = mod.input_size if layer == 0 else h
                total += steps * gates * h * (inp + h)

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    with torch.no_grad():
        module(example)
    for h in handles:
        h.remove()
    return total


def time_steps(step: Callable[[], None], n: int, sync: bool) -> float:
    """Seconds per call of ``step`` over ``n`` calls."""
    import time

    if sync:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    if sync:
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n

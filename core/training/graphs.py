"""CUDA graphs for the training step, an opt-in switch (``ARCHSCREEN_CUDA_GRAPHS``, off by default).

Why: most screening candidates are small, and on a GPU a small model's step is launch-bound (the
GPU idles while Python launches kernels: an Alrao step costs 1.7-1.8x an SGD step on an H200 for the
MLP and LeNet-5, ``docs/benchmarks.md``). A CUDA graph replays a captured sequence of kernels with
one launch.

What: :func:`enable_cuda_graphs` compiles the model's *body* in place with
``torch.compile(mode="reduce-overhead", dynamic=False)``, which captures its forward and backward
in CUDA graphs (``torch.compile``'s cudagraph trees). Deliberately small:

* The head (Alrao's copies, with their own fused backward) and the optimizer step stay eager:
  they are shared by every candidate and were tuned on their own (``bench/alrao_overhead.py``).
* Static shapes only (``dynamic=False``): each distinct input shape (the full training batch, the
  epoch's last partial batch, the evaluation batches, train/eval mode) is one more captured
  graph, a handful per run, within dynamo's recompile limit.
* ``nn.Module.compile`` compiles in place, so ``state_dict()`` keys (the checkpoint) are
  unchanged and a run resumes with or without the switch.
* Compile time is paid in the job's first epoch; whether the switch pays over a whole screening
  run is what ``bench/gpu_throughput.py`` measures on a GPU.

On the CPU it does nothing and says why (a log line and the returned reason): CUDA graphs need a
CUDA device, and compiling for the CPU costs more than a short screening run saves
(``docs/benchmarks.md``, the compiled step and head).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

log = logging.getLogger(__name__)

MODE = "reduce-overhead"

S = TypeVar("S")


def cuda_graphs_unavailable(device: str | torch.device) -> str | None:
    """Why CUDA graphs cannot be used on ``device`` (None: they can)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return f"CUDA graphs need a CUDA device; this job trains on {dev.type}"
    if not torch.cuda.is_available():
        return "CUDA graphs need a CUDA device; torch sees none"
    if not hasattr(nn.Module, "compile"):
        return f"torch {torch.__version__} has no nn.Module.compile"
    return None


def enable_cuda_graphs(model: nn.Module, device: str | torch.device) -> str:
    """Compile ``model.body`` (or ``model`` when it has no body) for CUDA graphs, in place.

    Returns one line saying what was done, or why nothing was (the CPU: a no-op), and logs it.
    """
    reason = cuda_graphs_unavailable(device)
    if reason is not None:
        line = f"CUDA graphs off: {reason}"
        log.info(line)
        return line
    target = getattr(model, "body", model)
    assert isinstance(target, nn.Module)
    target.compile(mode=MODE, dynamic=False)
    line = f"CUDA graphs on: {type(target).__name__} compiled with torch.compile(mode={MODE!r})"
    log.info(line)
    return line


def with_cuda_graphs(screener: S, device: str | torch.device) -> S:
    """``screener`` whose ``build(spec, data)`` returns a model with :func:`enable_cuda_graphs` applied.

    Works for any screener (the object's own ``build`` is wrapped; its class and fields, hence its
    name and result, are unchanged). The last reason is kept as ``screener.cuda_graphs``.
    """
    build: Callable[..., tuple[nn.Module, Any]] = screener.build  # type: ignore[attr-defined]

    def build_with_graphs(spec: Any, data: Any) -> tuple[nn.Module, Any]:
        model, optimizer = build(spec, data)
        object.__setattr__(screener, "cuda_graphs", enable_cuda_graphs(model, device))
        return model, optimizer

    object.__setattr__(screener, "build", build_with_graphs)  # frozen dataclasses too
    return screener

"""K job processes on one GPU (``archscreen worker --gpus 0,1 --jobs-per-gpu K``): a memory cap each.

Why: most screening candidates are small and launch-bound; one job at a time leaves the GPU
idle while Python launches kernels, so K jobs share a device. Without a cap, one job that grows
takes the memory its neighbours need and *they* fail. With
``torch.cuda.set_per_process_memory_fraction(safety / K)`` set in each job process before it
trains, the caching allocator refuses that job's own allocations past its share: the job that
does not fit fails with a stored one-line reason (:func:`oom_message`), its neighbours train on.

``safety`` (``ARCHSCREEN_GPU_MEMORY_SAFETY``, default 0.95) leaves room for what the cap does not
count: each process's CUDA context (some hundreds of MiB) and memory outside the caching allocator.

The ``--gpus`` supervisor pins one Celery worker per GPU (``CUDA_VISIBLE_DEVICES``) with
concurrency K and hands it ``ARCHSCREEN_PINNED_GPU`` and ``ARCHSCREEN_JOBS_PER_GPU``; each job
process reads them here. CUDA is initialised only in the job process, never in a forking one.

On a machine without CUDA the same layout can be rehearsed (``ARCHSCREEN_DEVICE=cpu`` with
``--gpus``; the tests and ``bench/gpu_throughput.py`` do): the share is computed, logged and
recorded in the job's result with ``applied: false``; nothing is capped.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from typing import Any

import torch

from archscreen.settings import Settings

log = logging.getLogger("archscreen.worker")

PINNED_GPU_ENV = "ARCHSCREEN_PINNED_GPU"
JOBS_PER_GPU_MAX = 64  # also Settings.jobs_per_gpu's bound and the CLI's
GIB = 1024**3


@dataclass(frozen=True)
class GpuShare:
    """One job process's share of its GPU (stored in the job's result as ``gpu_share``)."""

    gpu: str  # the id the supervisor pinned (CUDA_VISIBLE_DEVICES), as the operator wrote it
    jobs_per_gpu: int
    memory_fraction: float
    applied: bool  # False: the job trains on the CPU (a rehearsal), nothing was capped
    share_gib: float | None  # the cap in GiB (None when not applied)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_pinned: str | None = None  # set by pin() in a `--gpus` worker; inherited by its job processes


def pin(gpu: str | None) -> None:
    """Pin this worker (and the job processes it forks) to ``gpu`` (``archscreen worker --gpus``)."""
    global _pinned
    _pinned = gpu


def pinned_gpu() -> str | None:
    """The GPU this process's worker is pinned to (None: not a ``--gpus`` worker): :func:`pin`'s,
    else ``ARCHSCREEN_PINNED_GPU`` (a worker started by other means, the GPU bench)."""
    return _pinned or os.environ.get(PINNED_GPU_ENV) or None


def memory_fraction(settings: Settings) -> float:
    return settings.gpu_memory_safety / settings.jobs_per_gpu


def _cuda_index(device: str) -> int:
    dev = torch.device(device)
    return dev.index if dev.index is not None else torch.cuda.current_device()


def apply_gpu_share(settings: Settings, device: str) -> GpuShare | None:
    """Cap this job process's CUDA memory at its 1/K share; call before the job allocates anything.

    None when there is nothing to share: not a pinned worker, or K = 1 (the job has the device).
    """
    gpu = pinned_gpu()
    k = settings.jobs_per_gpu
    if gpu is None or k == 1:
        return None
    fraction = memory_fraction(settings)
    share_gib: float | None = None
    applied = torch.device(device).type == "cuda"
    if applied:
        index = _cuda_index(device)
        torch.cuda.set_per_process_memory_fraction(fraction, index)
        share_gib = round(fraction * torch.cuda.get_device_properties(index).total_memory / GIB, 2)
        log.info(
            "job process %s: GPU %s shared by %d job processes: memory fraction %.4g (%.2f GiB)",
            os.getpid(),
            gpu,
            k,
            fraction,
            share_gib,
        )
    else:
        log.info(
            "job process %s: GPU %s shared by %d job processes: memory fraction %.4g "
            "(not applied: the job trains on %s)",
            os.getpid(),
            gpu,
            k,
            fraction,
            device,
        )
    return GpuShare(gpu=gpu, jobs_per_gpu=k, memory_fraction=fraction, applied=applied, share_gib=share_gib)


def oom_message(settings: Settings) -> str:
    """The stored reason of a job that ran out of GPU memory (one line, no traceback)."""
    gpu = pinned_gpu() or os.environ.get("CUDA_VISIBLE_DEVICES") or "0"
    k = settings.jobs_per_gpu
    if pinned_gpu() is None or k == 1:
        total = _total_gib()
        size = f" ({total:.2f} GiB)" if total is not None else ""
        return f"job needs more memory than GPU {gpu} has{size}: lower the batch size or the model's size"
    fraction = memory_fraction(settings)
    total = _total_gib()
    size = f"{fraction * total:.2f} GiB" if total is not None else f"{fraction:.4g} of its memory"
    return f"job needs more than the 1/{k} share of GPU {gpu}: {size}; lower --jobs-per-gpu"


def _total_gib() -> float | None:
    """The current CUDA device's memory in GiB, only if CUDA is already initialised in this process."""
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / GIB

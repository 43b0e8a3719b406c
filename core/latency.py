"""Measured forward latency of a spec's model: NSGA-II's optional third kind of objective (issue 29).

The model is the one a user takes home (:func:`~archscreen.core.training.model.build_plain_model`:
the body and a plain head, no Alrao copies), in eval mode, under ``torch.inference_mode``, on the
job's device, fed a random batch of the dataset's input shape (latency does not depend on the
weights or the values). ``warmup`` calls first (allocator, kernel selection, lazy init), then the
median of ``repeats`` timed calls, each synchronised on a GPU; milliseconds per batch.

Why the median of a few: a screening worker shares its CPU cores with other jobs, so single calls
are noisy, and the median ignores the odd slow one. The figure is the worker's, under its thread
setting and load: comparable between the trials of one study on one kind of worker, not across
machines.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from archscreen.core.data.base import DatasetInfo

BATCH = 32
WARMUP = 3
REPEATS = 15


def forward_latency_ms(
    spec: Any,
    info: DatasetInfo,
    *,
    device: str = "cpu",
    batch: int = BATCH,
    warmup: int = WARMUP,
    repeats: int = REPEATS,
    seed: int = 0,
) -> float:
    """Median forward time of ``spec``'s plain model on one batch of ``batch`` inputs, in ms."""
    import torch

    from archscreen.core.training.model import build_plain_model

    if batch < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"batch and repeats must be >= 1 and warmup >= 0, got {batch}, {repeats}, {warmup}")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # building the model must not move the caller's RNG
        torch.manual_seed(seed)
        model = build_plain_model(spec, info).to(device).eval()
    shape = (batch, *info.input_shape)
    if info.input_kind == "tokens":
        x = torch.randint(0, int(info.vocab_size or 2), shape, generator=gen)
    else:
        x = torch.randn(shape, generator=gen)
    x = x.to(device)
    cuda = torch.device(device).type == "cuda"
    times: list[float] = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            if cuda:
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            model.predict(x)
            if cuda:
                torch.cuda.synchronize(device)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0

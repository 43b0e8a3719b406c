"""core.latency: measured forward latency, the optional NSGA-II objective."""

from __future__ import annotations

import pytest
import torch

from archscreen.core.data.base import DatasetInfo
from archscreen.core.latency import forward_latency_ms

DIGITS = DatasetInfo(name="digits", task="classification", input_shape=(1, 8, 8), num_classes=10)


def _mlp(width: int, depth: int) -> dict[str, object]:
    hidden: list[object] = []
    for _ in range(depth):
        hidden += [{"linear": width}, "relu"]
    return {"name": "mlp", "layers": ["flatten", *hidden], "head": "classifier"}


def test_a_much_bigger_model_takes_longer() -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        small = forward_latency_ms(_mlp(8, 1), DIGITS)
        big = forward_latency_ms(_mlp(1024, 6), DIGITS)  # ~5.3M multiply-adds a sample against ~600
    finally:
        torch.set_num_threads(threads)
    assert 0 < small < big


def test_tokens_input_and_the_callers_rng_is_untouched() -> None:
    info = DatasetInfo(
        name="chars",
        task="language_model",
        input_shape=(16,),
        input_kind="tokens",
        num_classes=20,
        vocab_size=20,
    )
    spec = {"name": "lm", "layers": [{"embedding": 8}, {"linear": 8}, "relu"], "head": "classifier"}
    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    assert forward_latency_ms(spec, info, repeats=2) > 0
    assert torch.equal(torch.rand(3), expected)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="batch and repeats"):
        forward_latency_ms(_mlp(8, 1), DIGITS, repeats=0)

"""Dataset infos for spec tests (the registry's shapes, without loading any data).

Shared through fixtures only: test modules never import this file, so the suite
works under any pytest import mode and beside other ``conftest.py`` files.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from archscreen.core.data.base import DatasetInfo

INFOS: dict[str, DatasetInfo] = {
    "mnist1d": DatasetInfo(name="mnist1d", task="classification", input_shape=(1, 40), num_classes=10),
    "digits": DatasetInfo(name="digits", task="classification", input_shape=(1, 8, 8), num_classes=10),
    "chartext": DatasetInfo(
        name="chartext",
        task="language_model",
        input_shape=(64,),
        input_kind="tokens",
        num_classes=60,
        vocab_size=60,
    ),
    "regression": DatasetInfo(name="regression", task="regression", input_shape=(16,), target_dim=1),
}


def random_batch(info: DatasetInfo, batch: int = 3) -> torch.Tensor:
    """A random input batch ``(batch, *info.input_shape)`` of the dataset's dtype."""
    if info.input_kind == "tokens":
        assert info.vocab_size is not None
        return torch.randint(0, info.vocab_size, (batch, *info.input_shape))
    return torch.randn(batch, *info.input_shape)


@pytest.fixture
def infos() -> dict[str, DatasetInfo]:
    """Dataset name -> DatasetInfo for mnist1d, digits, chartext, regression."""
    return INFOS


@pytest.fixture
def make_batch() -> Callable[..., torch.Tensor]:
    """``make_batch(info, batch=3)``: a random input batch of the dataset's dtype."""
    return random_batch

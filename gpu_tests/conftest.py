"""GPU checks, run explicitly on a machine with CUDA: ``python -m pytest gpu_tests``.

They are outside ``testpaths`` (CI has no GPU); here a missing GPU fails every test.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _require_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.fail("gpu_tests need a CUDA device (run them on the GPU machine)")

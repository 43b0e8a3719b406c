"""``core/foreach.py``: the one foreach rule of the Alrao optimizers and the tuners."""

from __future__ import annotations

import torch

from archscreen.core.foreach import use_foreach


def test_an_explicit_choice_is_respected_and_the_default_is_off_on_the_cpu() -> None:
    cpu = [torch.zeros(2), torch.zeros(3)]
    assert use_foreach(True, cpu) and not use_foreach(False, cpu)
    assert not use_foreach(None, cpu)  # torch.optim's default: foreach on accelerators only
    assert not use_foreach(None, [])
    if torch.cuda.is_available():
        assert use_foreach(None, [torch.zeros(2, device="cuda")])

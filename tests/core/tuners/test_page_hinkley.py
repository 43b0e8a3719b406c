"""The Page-Hinkley guard: fires on a spike, restores bit-exactly, quiet on stationary noise."""

from __future__ import annotations

import random

import pytest
import torch
from torch import nn

from archscreen.core.tuners import ALERA, PageHinkley


def guarded(factor: float = 2.0, noise_margin: float = 5.0) -> tuple[nn.Parameter, PageHinkley]:
    w = nn.Parameter(torch.randn(10, generator=torch.Generator().manual_seed(0)))
    return w, PageHinkley(torch.optim.SGD([w], lr=0.1), factor=factor, noise_margin=noise_margin)


def test_fires_on_a_spike_restores_bit_exactly_and_divides_the_rate() -> None:
    w, ph = guarded(factor=3.0)
    rng = random.Random(0)
    for _ in range(50):
        w.grad = torch.randn(10) * 0.01
        assert ph.step(loss=2.3 + 0.02 * rng.gauss(0, 1)) is False
    saved = w.detach().clone()  # θ^(b) is saved before the next accepted step
    w.grad = torch.randn(10)
    assert ph.step(loss=2.3) is False
    assert not torch.equal(w.detach(), saved)
    w.grad = torch.randn(10)
    assert ph.step(loss=9.0) is True  # catastrophic jump of the minibatch loss
    assert torch.equal(w.detach(), saved)
    assert ph.param_groups[0]["lr"] == pytest.approx(0.1 / 3.0)
    assert ph.triggers == 1
    assert ph.state["ph"]["t"] == 0  # test re-initialised


def test_no_trigger_on_stationary_noise_over_10k_steps() -> None:
    _, ph = guarded()
    rng = random.Random(1)
    for _ in range(10_000):
        assert ph.observe(2.3 + 0.1 * rng.gauss(0, 1)) is False


def test_paper_margin_zero_does_trigger_on_stationary_noise() -> None:
    # Why the noise margin exists: with the paper's δ = 0 the same signal raises false alarms.
    _, ph = guarded(noise_margin=0.0)
    rng = random.Random(1)
    fired = sum(ph.observe(2.3 + 0.1 * rng.gauss(0, 1)) for _ in range(10_000))
    assert fired > 0


def test_wraps_any_optimizer_and_round_trips() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    ph = PageHinkley(ALERA(model.parameters(), lr=0.1))
    x, y = torch.randn(16, 3), torch.randn(16, 1)
    for _ in range(5):
        ph.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        ph.step(loss=loss)
    sd = ph.state_dict()
    model2 = nn.Linear(3, 1)
    model2.load_state_dict(model.state_dict())
    ph2 = PageHinkley(ALERA(model2.parameters(), lr=0.5))
    ph2.load_state_dict(sd)
    assert ph2.param_groups[0]["lr"] == 0.1 and ph2.state["ph"] == ph.state["ph"]
    for a, b in zip(ph.state["backup"], ph2.state["backup"], strict=True):
        assert torch.equal(a, b)

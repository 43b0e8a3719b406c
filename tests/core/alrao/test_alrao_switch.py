"""Switch model averaging vs a slow, direct implementation of van Erven et al.'s switch HMM."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable

import pytest
import torch

from archscreen.core.alrao import Switch

State = tuple[str, int]


def _states(n: int) -> list[State]:
    return [(row, j) for row in ("a", "b") for j in range(n)]


def _prior(state: State, n: int, theta: float) -> float:
    return (theta if state[0] == "a" else 1.0 - theta) / n


def _trans(src: State, dst: State, n: int, theta: float, t: int) -> float:
    """P(dst at t+1 | src at t) in the switch HMM: row 'a' switches with prob 1/(t+1) to a
    uniformly drawn expert, landing in 'a' with prob theta and in 'b' (never switches again)
    with prob 1-theta; row 'b' keeps its expert forever."""
    pi = 1.0 / (t + 1)
    (r0, j), (r1, k) = src, dst
    if r0 == "b":
        return 1.0 if (r1 == "b" and j == k) else 0.0
    stay = (1.0 - pi) if (r1 == "a" and j == k) else 0.0
    return stay + pi * (theta if r1 == "a" else 1.0 - theta) / n


def _slow_forward(logliks: list[list[float]], theta: float) -> list[list[float]]:
    """Forward algorithm with explicit probabilities and loops; predictive expert weights after
    each observation (one common factor per step is removed to avoid underflow)."""
    n = len(logliks[0])
    states = _states(n)
    alpha = {s: _prior(s, n, theta) for s in states}
    out = []
    for t, ll in enumerate(logliks, start=1):
        m = max(ll)
        post = {s: alpha[s] * math.exp(ll[s[1]] - m) for s in states}
        new = dict.fromkeys(states, 0.0)
        for src in states:
            for dst in states:
                new[dst] += post[src] * _trans(src, dst, n, theta, t)
        z = sum(new.values())
        alpha = {s: v / z for s, v in new.items()}
        out.append([alpha[("a", j)] + alpha[("b", j)] for j in range(n)])
    return out


def _path_sum(logliks: list[list[float]], theta: float) -> list[float]:
    """Bayesian mixture over every hidden path s_1..s_{T+1} (tiny T only)."""
    n = len(logliks[0])
    states = _states(n)
    weights = [0.0] * n
    steps = len(logliks)
    for path in itertools.product(states, repeat=steps + 1):
        p = _prior(path[0], n, theta)
        for t in range(1, steps + 1):
            p *= math.exp(logliks[t - 1][path[t - 1][1]]) * _trans(path[t - 1], path[t], n, theta, t)
        weights[path[-1][1]] += p
    z = sum(weights)
    return [w / z for w in weights]


def _random_logliks(seed: int, steps: int, n: int) -> list[list[float]]:
    rng = random.Random(seed)
    # copies of different quality, with a change of leader halfway
    base = [rng.uniform(0.2, 3.0) for _ in range(n)]
    out = []
    for t in range(steps):
        shift = [b if t < steps // 2 else base[(j + 1) % n] for j, b in enumerate(base)]
        out.append([-(s + rng.uniform(0.0, 1.0)) for s in shift])
    return out


@pytest.mark.parametrize("n", [3, 4, 5, 6])
@pytest.mark.parametrize("theta", [0.999, 0.9])
def test_switch_matches_slow_forward(n: int, theta: float) -> None:
    logliks = _random_logliks(seed=n, steps=50, n=n)
    expected = _slow_forward(logliks, theta)
    sw = Switch(n, theta)
    for ll, exp in zip(logliks, expected, strict=True):
        sw.update(torch.tensor(ll, dtype=torch.float64))
        post = sw.posterior()
        assert post.dtype == torch.float64
        torch.testing.assert_close(post, torch.tensor(exp, dtype=torch.float64), rtol=0, atol=1e-9)
    # the posterior moved far from uniform (the comparison is not vacuous)
    assert float(post.max() - post.min()) > 0.3


def test_slow_forward_agrees_with_path_enumeration() -> None:
    logliks = _random_logliks(seed=7, steps=4, n=3)
    direct = _path_sum(logliks, theta=0.8)
    assert direct == pytest.approx(_slow_forward(logliks, theta=0.8)[-1], abs=1e-12)
    sw = Switch(3, 0.8)
    for ll in logliks:
        sw.update(torch.tensor(ll, dtype=torch.float64))
    torch.testing.assert_close(sw.posterior(), torch.tensor(direct, dtype=torch.float64), rtol=0, atol=1e-12)


def test_initial_posterior_uniform_and_state_in_buffers() -> None:
    sw = Switch(4)
    torch.testing.assert_close(sw.posterior(), torch.full((4,), 0.25, dtype=torch.float64))
    assert set(sw.state_dict()) == {"log_w", "t"}
    sw.update(torch.tensor([-1.0, -2.0, -3.0, -4.0]))
    assert float(sw.t) == 1.0
    sw.reset()
    torch.testing.assert_close(sw.posterior(), torch.full((4,), 0.25, dtype=torch.float64))


def test_buffers_stay_float64_under_dtype_casts() -> None:
    sw = Switch(3).float()
    assert sw.log_w.dtype == torch.float64 and sw.t.dtype == torch.float64
    sw = Switch(3).half()
    assert sw.log_w.dtype == torch.float64


def test_nan_loglik_sanitized() -> None:
    sw = Switch(3)
    sw.update(torch.tensor([-1.0, float("nan"), -1.5]))
    post = sw.posterior()
    assert bool(torch.isfinite(post).all())
    assert float(post[1]) < float(post[0])
    before = sw.log_w.clone()
    sw.update(torch.tensor([float("nan")] * 3))  # nobody explains the batch: skipped
    assert torch.equal(sw.log_w, before)
    raw = Switch(3, sanitize=False)
    raw.update(torch.tensor([-1.0, float("nan"), -1.5]))
    assert bool(torch.isnan(raw.posterior()).all())


@pytest.mark.parametrize("sanitize", [True, False])
def test_python_and_tensor_update_paths_agree(sanitize: bool) -> None:
    gen = torch.Generator().manual_seed(3)
    a, b = Switch(7, 0.99, sanitize=sanitize), Switch(7, 0.99, sanitize=sanitize)
    for step in range(200):
        ll = -torch.rand(7, generator=gen, dtype=torch.float64) * 3
        if sanitize and step == 50:
            ll[2] = float("nan")
        a._update_python(ll)
        b._update_tensor(ll)
        torch.testing.assert_close(a.log_w, b.log_w, rtol=1e-12, atol=1e-12)
        assert float(a.t) == float(b.t)


@pytest.mark.parametrize("sanitize", [True, False])
def test_python_and_tensor_paths_agree_on_dead_and_nan_copies(sanitize: bool) -> None:
    inf, nan = float("inf"), float("nan")
    rows = [
        [-1.0, -2.0, -0.5, -3.0],
        [-1.0, -inf, -0.5, -3.0],  # a copy with zero likelihood
        [-inf, -inf, -inf, -inf],  # nobody explains the batch
        [-0.5, -1.0, nan, -2.0],  # a diverged copy
        [-1.5, -0.2, -0.7, -1.1],
    ]
    a, b = Switch(4, 0.99, sanitize=sanitize), Switch(4, 0.99, sanitize=sanitize)
    for row in rows:
        ll = torch.tensor(row, dtype=torch.float64)
        a._update_python(ll)
        b._update_tensor(ll)
        torch.testing.assert_close(a.log_w, b.log_w, rtol=1e-12, atol=1e-12, equal_nan=True)
        assert float(a.t) == float(b.t)


def test_log_posterior_follows_every_change_of_the_buffers() -> None:
    """log_posterior() is cached per state of the buffers; each way of changing them shows."""

    def fresh(sw: Switch) -> torch.Tensor:
        return torch.logaddexp(sw.log_w[0], sw.log_w[1])

    sw = Switch(5, 0.99)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        before = sw.log_posterior()
        assert sw.log_posterior() is before  # shared until the buffers change
        sw.update(-torch.rand(5, generator=gen))
        torch.testing.assert_close(sw.log_posterior(), fresh(sw), rtol=1e-14, atol=1e-14)
        lp32 = sw.log_posterior(torch.float32)
        assert lp32.dtype == torch.float32
        torch.testing.assert_close(lp32, fresh(sw).float())
    saved = {k: v.clone() for k, v in sw.state_dict().items()}
    sw.reset()
    torch.testing.assert_close(sw.log_posterior(), torch.full((5,), -math.log(5), dtype=torch.float64))
    sw.load_state_dict(saved)
    torch.testing.assert_close(sw.log_posterior(), fresh(sw), rtol=0, atol=0)
    with torch.no_grad():
        sw.log_w[1, 2] -= 1.0  # any in-place change
    torch.testing.assert_close(sw.log_posterior(), fresh(sw), rtol=0, atol=0)


def test_python_update_sees_writes_made_between_updates() -> None:
    """The CPU update reuses the floats it wrote last time unless something else wrote the
    buffers since (reset, load_state_dict, any in-place change): compared with the tensor path."""
    gen = torch.Generator().manual_seed(5)
    a, b = Switch(4, 0.99), Switch(4, 0.99)

    def both(fn: Callable[[Switch], object]) -> None:
        fn(a)
        fn(b)

    def step() -> None:
        ll = -torch.rand(4, generator=gen, dtype=torch.float64) * 2
        a._update_python(ll)
        b._update_tensor(ll)
        torch.testing.assert_close(a.log_w, b.log_w, rtol=1e-12, atol=1e-12)
        assert float(a.t) == float(b.t)

    for _ in range(3):
        step()
    saved = {k: v.clone() for k, v in a.state_dict().items()}
    step()
    both(lambda sw: sw.load_state_dict(saved))
    step()
    both(lambda sw: sw.reset())
    step()
    step()
    with torch.no_grad():
        both(lambda sw: sw.log_w[0, 1].sub_(2.0))
    step()
    both(lambda sw: sw.t.fill_(40.0))
    step()
    a._update_python(torch.full((4,), float("nan"), dtype=torch.float64))  # skipped batch
    b._update_tensor(torch.full((4,), float("nan"), dtype=torch.float64))
    step()

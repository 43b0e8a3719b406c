"""ALERA / SPALERA / Ag-Adam / FD optimizers: formulas, foreach == reference, bad args, state_dict."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import pytest
import torch
from torch import nn

from archscreen.core.tuners import ALERA, FD1SGD, FD2SGD, SPALERA, AgAdam, PageHinkley, agnostic_moments


def tiny(dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).to(dtype)


def batches(n: int, dtype: torch.dtype = torch.float64) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [
        (torch.randn(8, 5, generator=g, dtype=dtype), torch.randint(0, 3, (8,), generator=g))
        for _ in range(n)
    ]


def run(model: nn.Module, opt: torch.optim.Optimizer, data, skip_grad_at: int | None = None) -> None:
    for i, (x, y) in enumerate(data):
        opt.zero_grad(set_to_none=True)
        if i != skip_grad_at:
            nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


# C is large so that the rate control visibly acts in a few steps.
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "alera": lambda ps, **kw: ALERA(ps, lr=0.1, C=0.05, **kw),
    "alera-global": lambda ps, **kw: ALERA(ps, lr=0.1, C=0.05, layerwise=False, **kw),
    "spalera": lambda ps, **kw: SPALERA(ps, lr=0.1, C=0.05, **kw),
    "spalera-global": lambda ps, **kw: SPALERA(ps, lr=0.1, C=0.05, layerwise=False, **kw),
    "ag-adam": lambda ps, **kw: AgAdam(ps, lr=0.01, C=0.05, **kw),
    "fd1": lambda ps, **kw: FD1SGD(ps, lr=0.1, meta_lr=0.01, **kw),
    "fd2": lambda ps, **kw: FD2SGD(ps, lr=0.1, **kw),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_foreach_matches_forloop(name: str) -> None:
    data = batches(7)
    states = []
    for foreach in (False, True):
        model = tiny()
        opt = OPTIMIZERS[name](model.parameters(), foreach=foreach)
        run(model, opt, data, skip_grad_at=3)
        states.append((model, opt))
    (m0, o0), (m1, o1) = states
    for a, b in zip(m0.parameters(), m1.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    for (_, sa), (_, sb) in zip(o0.state.items(), o1.state.items(), strict=True):
        if isinstance(sa, dict):
            for k in sa:
                if isinstance(sa[k], torch.Tensor):
                    torch.testing.assert_close(sa[k], sb[k], rtol=1e-12, atol=1e-14)
    assert o0.param_groups[0]["lr"] == pytest.approx(o1.param_groups[0]["lr"], rel=1e-12)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_state_dict_round_trip_resumes_identically(name: str) -> None:
    data = batches(8, torch.float32)
    model = tiny(torch.float32)
    opt = OPTIMIZERS[name](model.parameters())
    run(model, opt, data[:4])
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    run(model, opt, data[4:])
    model2 = tiny(torch.float32)
    model2.load_state_dict(saved_model)
    opt2 = OPTIMIZERS[name](model2.parameters())
    opt2.load_state_dict(saved_opt)
    run(model2, opt2, data[4:])
    for a, b in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(a, b)
    assert opt.param_groups[0]["lr"] == opt2.param_groups[0]["lr"]


def test_spalera_follows_the_formulas() -> None:
    alpha, C = 0.1, 0.01
    w = nn.Parameter(torch.zeros(6, dtype=torch.float64))
    g = torch.tensor([3.0, -1.0, 0.5, 0.0, 2.0, -4.0], dtype=torch.float64)
    opt = SPALERA([w], lr=0.5, alpha=alpha, C=C)
    w.grad = g.clone()
    opt.step()
    d = 6
    mu = alpha / (2 - alpha)
    sigma = math.sqrt((1 / d) * 2 * alpha**2 * (1 - alpha) ** 2 / ((2 - alpha) ** 2 * ((1 - alpha) ** 2 + 1)))
    mu_p, sigma_p = mu / d, sigma / math.sqrt(d)
    p = alpha * g / g.norm()
    expected_rates = torch.exp(C * (p**2 - mu_p) / sigma_p)
    torch.testing.assert_close(opt.state[w]["path"], p)
    torch.testing.assert_close(opt.state[w]["rate"], expected_rates)
    torch.testing.assert_close(w.detach(), -0.5 * expected_rates * g)
    assert agnostic_moments(alpha, d) == pytest.approx((mu, sigma))


def test_alera_follows_the_formulas() -> None:
    alpha, C = 0.1, 0.01
    w = nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = ALERA([w], lr=0.5, alpha=alpha, C=C)
    gs = [torch.tensor(v, dtype=torch.float64) for v in ([1.0, 2, 0, 0], [1.0, 1, 1, 0])]
    p = torch.zeros(4, dtype=torch.float64)
    rate = 1.0
    mu, sigma = agnostic_moments(alpha, 4)
    for g in gs:
        w.grad = g.clone()
        opt.step()
        p = alpha * g / g.norm() + (1 - alpha) * p
        rate *= math.exp(C * (float(p @ p) - mu) / sigma)
    assert float(opt.state[w]["rate"]) == pytest.approx(rate, rel=1e-12)


def test_agnostic_moments_match_a_random_walk() -> None:
    # The mean (eq. 4) matches a simulated walk of random unit vectors; the simulated standard
    # deviation is sqrt(2) times the paper's sigma (eq. 5 drops the factor 2 of the cross terms
    # l != k). We keep the paper's sigma (C absorbs the constant); see agnostic_moments' note.
    alpha, d, t = 0.1, 20, 60
    g = torch.Generator().manual_seed(0)
    u = torch.randn(3000, t, d, generator=g, dtype=torch.float64)
    u = u / u.norm(dim=-1, keepdim=True)
    weights = alpha * (1 - alpha) ** torch.arange(t - 1, -1, -1, dtype=torch.float64)
    r = (weights[None, :, None] * u).sum(dim=1)
    sq = (r * r).sum(-1)
    mu, sigma = agnostic_moments(alpha, d, t)
    assert float(sq.mean()) == pytest.approx(mu, rel=0.02)
    assert float(sq.std()) / sigma == pytest.approx(math.sqrt(2), rel=0.1)


def test_ag_adam_with_zero_C_is_adam() -> None:
    data = batches(5)
    m0, m1 = tiny(), tiny()
    run(m0, AgAdam(m0.parameters(), lr=0.01, C=0.0), data)
    run(m1, torch.optim.Adam(m1.parameters(), lr=0.01), data)
    for a, b in zip(m0.parameters(), m1.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_alera_with_zero_C_is_sgd() -> None:
    data = batches(5)
    m0, m1 = tiny(), tiny()
    run(m0, SPALERA(m0.parameters(), lr=0.1, C=0.0), data)
    run(m1, torch.optim.SGD(m1.parameters(), lr=0.1), data)
    for a, b in zip(m0.parameters(), m1.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def _p() -> list[nn.Parameter]:
    return [nn.Parameter(torch.zeros(2))]


BAD_ARGS = [
    (lambda: ALERA(_p(), lr=-1.0), ValueError, "Invalid learning rate: -1.0"),
    (lambda: ALERA(_p(), lr=float("nan")), ValueError, "Invalid learning rate"),
    (lambda: ALERA(_p(), alpha=0.0), ValueError, r"Invalid alpha: 0.0 \(must be in \(0, 1\)\)"),
    (lambda: SPALERA(_p(), alpha=1.5), ValueError, "Invalid alpha"),
    (lambda: ALERA(_p(), C=-1e-6), ValueError, "Invalid C"),
    (lambda: AgAdam(_p(), betas=(1.0, 0.999)), ValueError, "Invalid beta parameter at index 0"),
    (lambda: AgAdam(_p(), eps=0.0), ValueError, "Invalid epsilon value"),
    (lambda: FD2SGD(_p(), lr=0.0), ValueError, "Invalid learning rate: 0.0"),
    (lambda: FD2SGD(_p(), eps=0.0), ValueError, "Invalid eps"),
    (lambda: FD2SGD(_p(), delta=-1.0), ValueError, "Invalid delta"),
    (lambda: FD2SGD(_p(), momentum=1.0), ValueError, "Invalid momentum"),
    (lambda: FD2SGD(_p(), every=0), ValueError, "Invalid every: 0"),
    (lambda: FD2SGD(_p(), relative_eps=True, eps=0.5), ValueError, "relative eps must be < 0.5"),
    (lambda: FD2SGD(_p(), max_change=1.0), ValueError, "Invalid max_change"),
    (lambda: FD2SGD(_p(), eval_dtype=torch.int64), ValueError, "Invalid eval_dtype"),
    (lambda: FD2SGD(_p(), evaluation="fast"), ValueError, "Invalid evaluation"),  # type: ignore[arg-type]
    (lambda: FD1SGD(_p(), meta_lr=0.0), ValueError, "Invalid meta_lr"),
    (lambda: FD1SGD(_p(), max_change=0.5), ValueError, "Invalid max_change"),
    (lambda: PageHinkley(ALERA(_p()), lam=0.0), ValueError, "Invalid lam"),
    (lambda: PageHinkley(ALERA(_p()), factor=1.0), ValueError, "Invalid factor"),
    (lambda: PageHinkley(ALERA(_p()), rho=0.0), ValueError, "Invalid rho"),
    (lambda: PageHinkley(ALERA(_p()), noise_margin=-1.0), ValueError, "Invalid noise_margin"),
    (lambda: PageHinkley("sgd"), TypeError, "wraps a torch.optim.Optimizer"),  # type: ignore[arg-type]
    (lambda: PageHinkley(ALERA(_p())).step(), ValueError, "needs the minibatch loss"),
]


@pytest.mark.parametrize("make,exc,match", BAD_ARGS)
def test_bad_arguments(make: Callable[[], object], exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_no_gradient_is_a_no_op(name: str) -> None:
    model = tiny()
    opt = OPTIMIZERS[name](model.parameters())
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_cached_step_follows_add_param_group_and_load_state_dict(name: str) -> None:
    """step() reuses its flat lists between steps; adding a group or loading state rebuilds them,
    so an optimizer that had cached its lists behaves as a freshly built one."""
    data = batches(6)
    runs = []
    for warm in (True, False):
        model = tiny()
        first, second = list(model[0].parameters()), list(model[2].parameters())
        opt = OPTIMIZERS[name](first)
        if warm:
            run(model, opt, data[:2])  # lists cached for the first group only
        else:
            opt_ref = OPTIMIZERS[name](first)
            run(model, opt_ref, data[:2])
            opt.load_state_dict(copy.deepcopy(opt_ref.state_dict()))
        opt.add_param_group({"params": second})
        run(model, opt, data[2:4])
        if warm:
            opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # fresh state tensors
        run(model, opt, data[4:])
        runs.append((model, opt))
    (m0, o0), (m1, o1) = runs
    for a, b in zip(m0.parameters(), m1.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    s0, s1 = o0.state_dict()["state"], o1.state_dict()["state"]
    assert s0.keys() == s1.keys()
    for key in s0:
        for field, value in s0[key].items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(value, s1[key][field], rtol=0, atol=0)
            else:
                assert value == s1[key][field], (key, field)
    # the second group's parameters were trained after it was added
    assert not torch.equal(m0[2].weight, tiny()[2].weight)

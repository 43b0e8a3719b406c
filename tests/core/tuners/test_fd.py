"""FD2SGD / FD1SGD: Newton on a quadratic, float32 rounding, safety, batched == sequential."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from archscreen.core.tuners import FD1SGD, FD2SGD, newton_rate_step
from archscreen.core.tuning import batched_functional_loss, functional_loss


def quadratic(dim: int = 10, seed: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    eig = torch.logspace(0, 1.5, dim, dtype=dtype)  # eigenvalues 1 .. ~31.6
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=dtype))
    h = q @ torch.diag(eig) @ q.T
    w = nn.Parameter(3.0 * torch.randn(dim, generator=g, dtype=dtype))
    return h, w


def grad_at(w: nn.Parameter, h: torch.Tensor) -> None:
    w.grad = None
    (0.5 * w @ h @ w).backward()


def loss_fn(h: torch.Tensor):
    return lambda ps: 0.5 * ps[0] @ h.to(ps[0].dtype) @ ps[0]


def optimal_rate(w: torch.Tensor, h: torch.Tensor) -> float:
    g = h @ w.detach()
    return float(g @ g / (g @ h @ g))


@pytest.mark.parametrize("eta0", [1e-3, 0.01, 0.2])
def test_fd2_converges_to_one_step_optimal_rate(eta0: float) -> None:
    # ε = 1e-3 in float64 (science.md): Newton lands on gᵀg/gᵀHg. w is reset after each step so
    # that g stays fixed and the fixed point is exact.
    h, w = quadratic()
    target = optimal_rate(w, h)
    w0 = w.detach().clone()
    opt = FD2SGD([w], lr=eta0, eps=1e-3, delta=1e-6)
    for _ in range(8):
        grad_at(w, h)
        opt.step(loss_at=loss_fn(h))
        with torch.no_grad():
            w.copy_(w0)
    assert opt.lr == pytest.approx(target, rel=0.01)
    assert opt.state["fd"]["last"]["curvature"] > 1e-6  # a real Newton step, not the δ-dominated one


def test_fd2_tracks_the_optimal_rate_while_training() -> None:
    h, w = quadratic(seed=1)
    opt = FD2SGD([w], lr=0.01, eps=1e-3)
    for _ in range(3):
        grad_at(w, h)
        target = optimal_rate(w, h)
        opt.step(loss_at=loss_fn(h))
    # one Newton step from any η lands on the current batch's optimum (f is exactly quadratic)
    assert opt.lr == pytest.approx(target, rel=0.01)


def test_paper_constants_are_first_order_in_float64() -> None:
    # ε = 1e-5, δ = 1e-6: 4ε²f'' ≪ δ, so Δη ≈ −(4ε²/δ) f'(η): a first-order step with meta rate 4e-4.
    h, w = quadratic(seed=2)
    h = h / 10  # keep f'' moderate
    grad_at(w, h)
    g = (h @ w).detach()
    eta = 0.05
    fprime = float(-g @ g + eta * g @ h @ g)
    opt = FD2SGD([w], lr=eta)
    opt.step(loss_at=loss_fn(h))
    assert opt.lr - eta == pytest.approx(-(4e-10 / 1e-6) * fprime, rel=0.05)
    assert abs(opt.lr - optimal_rate(w, h)) > 0.5 * abs(eta - optimal_rate(w, h))  # far from Newton


def test_paper_constants_drown_in_float32_rounding() -> None:
    # science.md: on a small MLP the float32 second difference at ε = 1e-5 is rounding noise.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 10))
    x, y = torch.randn(128, 40), torch.randint(0, 10, (128,))

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x, y):
            class Out:
                pass

            o = Out()
            o.loss = nn.functional.cross_entropy(self.net(x), y)  # type: ignore[attr-defined]
            return o

    m = M()
    m.net(x)
    nn.functional.cross_entropy(m.net(x), y).backward()
    etas = [0.1 + k * 1e-5 for k in (0, 1, -1, 2, -2)]
    f32 = FD2SGD(m.parameters(), lr=0.1).evaluate_f(etas, functional_loss(m, x, y))
    f64 = FD2SGD(m.parameters(), lr=0.1, eval_dtype=torch.float64).evaluate_f(etas, functional_loss(m, x, y))
    _, _, curv32 = newton_rate_step(f32, 0.1, 1e-5, 1e-6)
    _, _, curv64 = newton_rate_step(f64, 0.1, 1e-5, 1e-6)
    assert 0 < curv64 < 1e-6  # true curvature term: positive, far below δ
    assert abs(curv32 - curv64) > 10 * abs(curv64)  # float32: rounding dominates


@pytest.mark.parametrize("paper_exact", [False, True])
@pytest.mark.parametrize("cls", ["fd2", "fd1"])
def test_rate_stays_positive_and_finite_from_100(cls: str, paper_exact: bool) -> None:
    """From a rate far too high, with float32 weights whose loss overflows (inf), the guards keep
    the rate finite and bring it down; without them (the paper's method) it is lost to NaN/inf
    within a few steps: the difference the ``paper_exact`` switch makes.

    The weights start at ~1e18, where 0.5 wᵀHw is past float32's range, so the non-finite losses
    come from the setup, not from how float32 rounding plays out over a diverging run (which
    differed between CPUs: from unit-scale weights, unguarded fd2 lost its rate on one machine
    and settled at its floor on another)."""
    h, w = quadratic(seed=3, dtype=torch.float32)
    with torch.no_grad():
        w.mul_(1e18)
    opt: torch.optim.Optimizer
    if cls == "fd2":
        guards = {
            "relative_eps": True,
            "eps": 0.1,
            "curvature_guard": True,
            "max_change": 2.0,
            "finite_guard": True,
        }
        opt = FD2SGD([w], lr=100.0, **({} if paper_exact else guards))  # type: ignore[arg-type]
    else:
        opt = FD1SGD([w], lr=100.0, **({} if paper_exact else {"max_change": 2.0, "finite_guard": True}))
    lost_at = None
    for i in range(200):
        grad_at(w, h)
        if cls == "fd2":
            opt.step(loss_at=loss_fn(h))
        else:
            opt.step()
        lr = opt.param_groups[0]["lr"]
        if lost_at is None and not (math.isfinite(lr) and lr > 0):
            lost_at = i
        if not torch.isfinite(w).all():  # diverged weights: restart them, the rate must survive
            with torch.no_grad():
                w.normal_()
    if paper_exact:
        assert lost_at is not None and lost_at < 20  # measured: step 0 (fd2), step 2 (fd1)
    else:
        assert lost_at is None
        assert opt.param_groups[0]["lr"] < 100.0


def test_fd1_moves_toward_the_optimal_rate() -> None:
    h, w = quadratic(seed=4)
    target = optimal_rate(w, h)
    g = (h @ w).detach()
    alpha = 0.5 / float(g @ h @ g)  # f'(η) = gᵀHg (η − η*): this α moves η half-way
    for eta0 in (0.2 * target, 1.8 * target):
        w0 = w.detach().clone()
        opt = FD1SGD([w], lr=eta0, meta_lr=alpha)
        grad_at(w, h)
        opt.step()  # first step only stores g(t)
        grad_at(w, h)
        opt.step()  # η ← η + α g(t)·g(t+1)
        assert abs(opt.lr - target) == pytest.approx(0.5 * abs(eta0 - target), rel=1e-6)
        assert (opt.lr - eta0) * (target - eta0) > 0
        with torch.no_grad():
            w.copy_(w0)


def test_batched_evaluation_equals_sequential() -> None:
    torch.manual_seed(0)
    from archscreen.core.training.model import PlainHead, ScreenModel

    body = nn.Sequential(nn.Flatten(), nn.Linear(40, 32), nn.Tanh())
    model = ScreenModel(body, PlainHead(32, 10, "classification"), "classification").double()
    x, y = torch.randn(64, 1, 40, dtype=torch.float64), torch.randint(0, 10, (64,))
    model(x, y).loss.backward()
    opt = FD2SGD(model.parameters(), lr=0.1, eps=1e-3)
    etas = [0.1, 0.101, 0.099, 0.102, 0.098]
    seq = opt.evaluate_f(etas, functional_loss(model, x, y))
    bat = opt.evaluate_f(etas, None, batched_functional_loss(model, x, y), batched=True)
    assert bat == pytest.approx(seq, rel=1e-12, abs=1e-14)
    # and the real weights were never touched
    before = [p.detach().clone() for p in model.parameters()]
    opt.evaluate_f(etas, functional_loss(model, x, y))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_curvature_guard_blocks_uphill_newton() -> None:
    # f concave in η: the raw Newton step walks uphill (away from the descent side); the guard skips it.
    w = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    w.grad = torch.tensor([1.0], dtype=torch.float64)
    concave = lambda ps: -(ps[0] ** 2).sum()  # noqa: E731
    raw = FD2SGD([w], lr=0.1, eps=1e-3)
    raw.step(loss_at=concave)
    w.data.fill_(1.0)
    guarded = FD2SGD([w], lr=0.1, eps=1e-3, curvature_guard=True)
    guarded.step(loss_at=concave)
    assert raw.lr != pytest.approx(0.1)
    assert guarded.lr == 0.1 and guarded.state["fd"]["last"]["guard"] == "curvature"


def test_averaged_newton_converges_and_damps_noise() -> None:
    # Fixed g (w reset each step): the Newton step on averaged f', f'' still lands on gᵀg/gᵀHg.
    h, w = quadratic(seed=3)
    target = optimal_rate(w, h)
    w0 = w.detach().clone()
    opt = FD2SGD([w], lr=0.01, eps=0.1, relative_eps=True, average=0.9, max_change=2.0)
    for _ in range(120):
        grad_at(w, h)
        opt.step(loss_at=loss_fn(h))
        with torch.no_grad():
            w.copy_(w0)
    assert opt.lr == pytest.approx(target, rel=0.01)
    assert {"avg_target", "avg_d2"} <= set(opt.state_dict()["state"]["fd"])

    # A noisy loss (a random offset along g each evaluation round): averaging spreads the rate less.
    def spread(average: float) -> float:
        torch.manual_seed(0)
        hh, ww = quadratic(seed=3)
        start = ww.detach().clone()
        o = FD2SGD([ww], lr=target, eps=0.1, relative_eps=True, average=average, max_change=2.0)
        rates = []
        for _ in range(200):
            grad_at(ww, hh)
            g = ww.grad.detach().clone()
            tilt = 0.3 * float(g @ g) * float(torch.randn(()))  # f'(η) shifted by a noisy slope

            def noisy(ps: list[torch.Tensor], g: torch.Tensor = g, tilt: float = tilt) -> torch.Tensor:
                eta = float((start - ps[0]) @ g / (g @ g))  # recover η' from w − η'g
                return loss_fn(hh)(ps) + tilt * eta

            o.step(loss_at=noisy)
            rates.append(math.log(o.lr))
            with torch.no_grad():
                ww.copy_(start)
        tail = rates[100:]
        mean = sum(tail) / len(tail)
        return math.sqrt(sum((r - mean) ** 2 for r in tail) / len(tail))

    s_avg, s_raw = spread(0.9), spread(0.0)
    assert s_avg < 0.5 * s_raw


def test_invalid_average() -> None:
    _, w = quadratic()
    with pytest.raises(ValueError, match="Invalid average"):
        FD2SGD([w], average=1.0)

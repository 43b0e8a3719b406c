"""FD2Adam: Adam's step without rate updates, Newton on Adam's direction, foreach == reference,
state_dict round trip."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from archscreen.core.tuners import FD2SGD, FD2Adam
from archscreen.core.tuning import FD2AdamTuner, FD2Tuner, get_tuner
from tests.core.tuners.test_fd import grad_at, loss_fn, quadratic


def _pair(seed: int = 0) -> tuple[torch.Tensor, list[nn.Parameter]]:
    """A quadratic over two parameter tensors (one without a gradient every third step)."""
    h, w = quadratic(dim=10, seed=seed)
    extra = nn.Parameter(torch.randn(3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
    return h, [w, extra]


def _grads(ps: list[nn.Parameter], h: torch.Tensor, t: int) -> None:
    grad_at(ps[0], h)
    ps[1].grad = None if t % 3 == 2 else (ps[1].detach() * 2.0).clone()


def _loss_at(h: torch.Tensor):
    return lambda params: 0.5 * params[0] @ h.to(params[0].dtype) @ params[0] + (params[1] ** 2).sum()


def test_without_rate_updates_it_is_torch_adam() -> None:
    h, ps = _pair()
    ref = [nn.Parameter(p.detach().clone()) for p in ps]
    ours = FD2Adam(ps, lr=0.05)
    adam = torch.optim.Adam(ref, lr=0.05, foreach=False)
    for t in range(12):
        _grads(ps, h, t)
        _grads(ref, h, t)
        ours.step()  # no loss_at: the rate never moves
        adam.step()
    for a, b in zip(ps, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-14, atol=1e-15)
    assert ours.lr == 0.05


@pytest.mark.parametrize("every", [1, 3])
def test_foreach_equals_reference_in_float64(every: int) -> None:
    h, ps = _pair(seed=1)
    ps2 = [nn.Parameter(p.detach().clone()) for p in ps]
    kw = {
        "lr": 0.01,
        "eps": 0.1,
        "relative_eps": True,
        "curvature_guard": True,
        "max_change": 2.0,
        "every": every,
    }
    a = FD2Adam(ps, foreach=False, **kw)  # type: ignore[arg-type]
    b = FD2Adam(ps2, foreach=True, **kw)  # type: ignore[arg-type]
    for t in range(20):
        _grads(ps, h, t)
        _grads(ps2, h, t)
        a.step(loss_at=_loss_at(h))
        b.step(loss_at=_loss_at(h))
    assert a.state["fd"]["updates"] == b.state["fd"]["updates"] > 0
    assert a.lr == pytest.approx(b.lr, rel=1e-12) and a.lr != 0.01  # the rate moved, identically
    for p, q in zip(ps, ps2, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(a.state[p][key], b.state[q][key], rtol=1e-12, atol=1e-14)
        assert a.state[p]["step"] == b.state[q]["step"]
    assert a.state[ps[1]]["step"] < a.state[ps[0]]["step"]  # per-parameter bias correction


def test_newton_lands_on_the_one_step_optimal_rate_along_adams_direction() -> None:
    # With w reset every step g is constant, so m̂ = g and v̂ = g² exactly and u = g / (|g| + ε):
    # f(η) = L(w − ηu) is a quadratic in η with minimum gᵀu / uᵀHu, which Newton hits.
    h, w = quadratic()
    w0 = w.detach().clone()
    g = h @ w0
    u = g / (g.abs() + 1e-8)
    target = float(g @ u / (u @ h @ u))
    opt = FD2Adam([w], lr=1e-3, eps=1e-3, delta=1e-6)
    for _ in range(8):
        grad_at(w, h)
        opt.step(loss_at=loss_fn(h))
        with torch.no_grad():
            w.copy_(w0)
    assert opt.lr == pytest.approx(target, rel=0.01)
    assert opt.state["fd"]["last"]["curvature"] > 1e-6  # a real Newton step
    # fd2 on the same problem goes to a different rate (along g, not u): the direction matters
    w.data.copy_(w0)
    sgd = FD2SGD([w], lr=1e-3, eps=1e-3, delta=1e-6)
    for _ in range(8):
        grad_at(w, h)
        sgd.step(loss_at=loss_fn(h))
        with torch.no_grad():
            w.copy_(w0)
    assert sgd.lr == pytest.approx(float(g @ g / (g @ h @ g)), rel=0.01)
    assert abs(sgd.lr - opt.lr) > 0.1 * opt.lr


def test_state_dict_round_trip_continues_identically() -> None:
    h, ps = _pair(seed=2)
    kw = {
        "lr": 0.02,
        "eps": 0.1,
        "relative_eps": True,
        "curvature_guard": True,
        "max_change": 1.1,
        "every": 2,
    }
    a = FD2Adam(ps, **kw)  # type: ignore[arg-type]
    for t in range(7):
        _grads(ps, h, t)
        a.step(loss_at=_loss_at(h))
    saved = copy.deepcopy(a.state_dict())
    ps2 = [nn.Parameter(p.detach().clone()) for p in ps]
    b = FD2Adam(ps2, **kw)  # type: ignore[arg-type]
    b.load_state_dict(saved)
    assert b.lr == a.lr and b.state["fd"]["step"] == a.state["fd"]["step"] == 7
    for t in range(7, 15):
        _grads(ps, h, t)
        _grads(ps2, h, t)
        a.step(loss_at=_loss_at(h))
        b.step(loss_at=_loss_at(h))
    assert a.lr == b.lr
    for p, q in zip(ps, ps2, strict=True):
        assert torch.equal(p, q)


def test_invalid_arguments() -> None:
    w = nn.Parameter(torch.zeros(2))
    with pytest.raises(ValueError, match="betas"):
        FD2Adam([w], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="adam_eps"):
        FD2Adam([w], adam_eps=0.0)
    with pytest.raises(ValueError, match="learning rate"):
        FD2Adam([w], lr=-1.0)


def test_fd2_adam_tuner_shares_fd2s_switches() -> None:
    t, fd2 = get_tuner("fd2-adam"), FD2Tuner()
    assert isinstance(t, FD2AdamTuner) and t.base_optimizer == "adam" and t.default_init_lr() == 1e-3
    keys = (
        "eps",
        "delta",
        "relative_eps",
        "eval_dtype",
        "curvature_guard",
        "max_change",
        "finite_guard",
        "every",
    )
    assert all(getattr(t, k) == getattr(fd2, k) for k in (*keys, "recommend", "eval_samples"))
    # the one measured difference (docs/tuners.md): the five losses on held-out samples
    assert (t.eval_batch, fd2.eval_batch) == ("validation", "train")
    assert get_tuner("fd2-adam", eval_batch="train").eval_batch == "train"
    exact, fd2_exact = get_tuner("fd2-adam", paper_exact=True), FD2Tuner(paper_exact=True)
    assert all(
        getattr(exact, k) == getattr(fd2_exact, k) for k in (*keys, "recommend", "eval_samples", "eval_batch")
    )
    opt = t.build_optimizer(nn.Linear(3, 2), 1e-3)
    assert isinstance(opt, FD2Adam) and opt.lr == 1e-3


def test_validation_batches_wrap_around_so_batch_norm_never_sees_one_sample() -> None:
    """fd2-adam's trial losses read ``n`` validation rows per update from a cycling order; a slice
    cut at the split's end held one row (65 rows, 64 per update: the second update read row 64
    alone) and batch norm refused it in training mode (a real table's search crashed in tuning)."""
    from archscreen.core.data.base import DatasetInfo, DatasetSplits
    from archscreen.core.training.loop import TrainConfig

    g = torch.Generator().manual_seed(0)
    info = DatasetInfo(name="t", task="classification", input_shape=(6,), input_kind="float", num_classes=2)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.randn(n, 6, generator=g)
        return x, (x[:, 0] > 0).long()

    data = DatasetSplits(info, *split(64), *split(65), *split(20))
    spec = {"name": "bn", "layers": [{"linear": 8}, "batchnorm", "relu"], "head": "classifier"}
    tuner = FD2AdamTuner()
    assert tuner.eval_batch == "validation"
    result = tuner.tune(spec, data, 1e-3, TrainConfig(max_epochs=3, patience=3, batch_size=32))
    assert result.epochs == 3 and math.isfinite(result.val_loss)

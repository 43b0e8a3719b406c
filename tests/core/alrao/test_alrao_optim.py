"""AlraoSGD / AlraoAdam: reference vs foreach, parity with torch.optim, persistence, validation."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from archscreen.core.alrao import AlraoAdam, AlraoHead, AlraoSGD, alrao_param_groups


class _Body(nn.Module):
    """Every supported module type, small."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 4)
        self.rnn = nn.LSTM(4, 5, batch_first=True)
        self.gru = nn.GRU(5, 3, batch_first=True)
        self.ln = nn.LayerNorm(3)
        self.conv = nn.Conv1d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm1d(6)
        self.lin = nn.Linear(6, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.emb(x))
        h, _ = self.gru(h)
        h = self.ln(h).transpose(1, 2)
        h = self.bn(self.conv(h)).mean(-1)
        return torch.tanh(self.lin(h))


def _make(seed: int = 0) -> tuple[_Body, AlraoHead]:
    torch.manual_seed(seed)
    body = _Body().double()
    head = AlraoHead(7, 5, 3, 1e-3, 1.0).double()
    return body, head


def _batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(123)
    return [
        (torch.randint(0, 11, (4, 6), generator=g), torch.randint(0, 5, (4,), generator=g)) for _ in range(n)
    ]


def _train(
    body: _Body,
    head: AlraoHead,
    opt: torch.optim.Optimizer,
    batches: list[Any],
    drop_grad_at: int | None = None,
) -> None:
    for i, (x, y) in enumerate(batches):
        opt.zero_grad()
        out = head(body(x), y)
        out.loss.backward()
        if i == drop_grad_at:
            body.lin.weight.grad = None  # one step in which a parameter has no gradient
        opt.step()
        head.switch.update(out.copy_loglik)


OPTS: list[tuple[str, Callable[..., torch.optim.Optimizer]]] = [
    ("sgd", lambda groups, **kw: AlraoSGD(groups, 1e-3, 1.0, **kw)),
    ("sgd_momentum", lambda groups, **kw: AlraoSGD(groups, 1e-3, 1.0, momentum=0.9, weight_decay=1e-2, **kw)),
    ("sgd_nesterov", lambda groups, **kw: AlraoSGD(groups, 1e-3, 1.0, momentum=0.5, nesterov=True, **kw)),
    ("sgd_dampening", lambda groups, **kw: AlraoSGD(groups, 1e-3, 1.0, momentum=0.9, dampening=0.3, **kw)),
    ("adam", lambda groups, **kw: AlraoAdam(groups, 1e-4, 1e-1, **kw)),
    (
        "adam_wd",
        lambda groups, **kw: AlraoAdam(groups, 1e-4, 1e-1, betas=(0.8, 0.99), weight_decay=0.1, **kw),
    ),
]


@pytest.mark.parametrize(("name", "factory"), OPTS, ids=[n for n, _ in OPTS])
def test_foreach_equals_reference_float64(name: str, factory: Callable[..., torch.optim.Optimizer]) -> None:
    runs = []
    for foreach in (False, True):
        body, head = _make()
        opt = factory([*alrao_param_groups(body), head.param_group()], foreach=foreach)
        _train(body, head, opt, _batches(7), drop_grad_at=3)
        runs.append((body, head, opt))
    (b0, h0, o0), (b1, h1, o1) = runs
    p0 = [*b0.parameters(), *h0.parameters()]
    p1 = [*b1.parameters(), *h1.parameters()]
    for a, b in zip(p0, p1, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)
        assert o0.state[a].keys() == o1.state[b].keys()
        for key in o0.state[a]:
            torch.testing.assert_close(o0.state[a][key], o1.state[b][key], rtol=1e-13, atol=1e-15)
    # the parameter without a gradient at step 3 took one step fewer
    assert int(o1.state[b1.lin.weight]["step"]) == 6 and int(o1.state[b1.lin.bias]["step"]) == 7
    # training moved the parameters (the comparison above is not vacuous)
    body_init, _ = _make()
    assert not torch.equal(body_init.lin.weight, b1.lin.weight)


TORCH_PAIRS: list[tuple[str, Callable[..., torch.optim.Optimizer], Callable[..., torch.optim.Optimizer]]] = [
    ("sgd", lambda p, **kw: AlraoSGD(p, 0.05, 0.05, **kw), lambda p, **kw: torch.optim.SGD(p, lr=0.05, **kw)),
    (
        "sgd_momentum",
        lambda p, **kw: AlraoSGD(p, 0.05, 0.05, momentum=0.9, weight_decay=1e-2, **kw),
        lambda p, **kw: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-2, **kw),
    ),
    (
        "sgd_nesterov",
        lambda p, **kw: AlraoSGD(p, 0.05, 0.05, momentum=0.9, nesterov=True, **kw),
        lambda p, **kw: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, **kw),
    ),
    (
        "adam",
        lambda p, **kw: AlraoAdam(p, 3e-3, 3e-3, **kw),
        lambda p, **kw: torch.optim.Adam(p, lr=3e-3, **kw),
    ),
    (
        "adam_wd",
        lambda p, **kw: AlraoAdam(p, 3e-3, 3e-3, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, **kw),
        lambda p, **kw: torch.optim.Adam(p, lr=3e-3, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, **kw),
    ),
]


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize(("name", "alrao", "ref"), TORCH_PAIRS, ids=[n for n, _, _ in TORCH_PAIRS])
def test_equal_range_matches_torch_optim(name: str, alrao: Any, ref: Any, foreach: bool) -> None:
    models = []
    for kind in ("alrao", "torch"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
        if kind == "alrao":
            opt = alrao(alrao_param_groups(model), foreach=foreach)
        else:
            opt = ref(model.parameters(), foreach=foreach)
        g = torch.Generator().manual_seed(1)
        for _ in range(6):
            x = torch.randn(16, 5, generator=g, dtype=torch.float64)
            y = torch.randint(0, 3, (16,), generator=g)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        models.append(model)
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)


def test_rates_are_applied_per_feature() -> None:
    lin = nn.Linear(3, 4).double()
    opt = AlraoSGD(alrao_param_groups(lin), 1e-3, 1.0)
    w0, b0 = lin.weight.detach().clone(), lin.bias.detach().clone()
    lin.weight.grad = torch.ones_like(lin.weight)
    lin.bias.grad = torch.ones_like(lin.bias)
    opt.step()
    (rates,) = opt.feature_rates()
    torch.testing.assert_close(w0 - lin.weight.detach(), rates[:, None].expand(4, 3), rtol=0, atol=1e-15)
    torch.testing.assert_close(b0 - lin.bias.detach(), rates, rtol=0, atol=1e-15)


def test_head_group_uses_fixed_copy_rates() -> None:
    head = AlraoHead(4, 3, 5, 1e-4, 1.0).double()
    opt = AlraoSGD([head.param_group()], 1e-4, 1.0)
    (rates,) = opt.feature_rates()
    torch.testing.assert_close(rates, head.copy_rates(), rtol=0, atol=0)
    assert opt.state[head.weight]["lr"].shape == (5, 1, 1)
    assert opt.state[head.bias]["lr"].shape == (5, 1)


@pytest.mark.parametrize("cls", [AlraoSGD, AlraoAdam])
def test_state_dict_round_trip_continues_bit_identical(cls: type[torch.optim.Optimizer]) -> None:
    kw: dict[str, Any] = {"momentum": 0.9} if cls is AlraoSGD else {}
    batches = _batches(8)
    # uninterrupted
    body, head = _make()
    opt = cls([*alrao_param_groups(body), head.param_group()], 1e-3, 1.0, seed=5, **kw)
    _train(body, head, opt, batches)
    # interrupted after 4 steps, restored into fresh objects built with another seed
    body1, head1 = _make()
    opt1 = cls([*alrao_param_groups(body1), head1.param_group()], 1e-3, 1.0, seed=5, **kw)
    _train(body1, head1, opt1, batches[:4])
    saved = copy.deepcopy({"body": body1.state_dict(), "head": head1.state_dict(), "opt": opt1.state_dict()})
    body2, head2 = _make(seed=99)
    opt2 = cls([*alrao_param_groups(body2), head2.param_group()], 1e-3, 1.0, seed=6, **kw)
    assert not all(torch.equal(a, b) for a, b in zip(opt2.feature_rates(), opt.feature_rates(), strict=True))
    body2.load_state_dict(saved["body"])
    head2.load_state_dict(saved["head"])
    opt2.load_state_dict(saved["opt"])
    assert all(torch.equal(a, b) for a, b in zip(opt2.feature_rates(), opt.feature_rates(), strict=True))
    _train(body2, head2, opt2, batches[4:])
    for a, b in zip(
        [*body.parameters(), *head.parameters()], [*body2.parameters(), *head2.parameters()], strict=True
    ):
        assert torch.equal(a, b)
    assert torch.equal(head.switch.log_w, head2.switch.log_w)


def test_rates_in_state_dict_before_first_step() -> None:
    lin = nn.Linear(3, 4)
    sd = AlraoSGD(alrao_param_groups(lin), 1e-3, 1.0).state_dict()
    assert sd["state"][0]["lr"].shape == (4, 1)
    assert sd["param_groups"][0]["num_features"] == 4


def test_load_state_dict_rejects_wrong_rate_shapes() -> None:
    small, big = nn.Linear(3, 4), nn.Linear(3, 4)
    sd = AlraoSGD(alrao_param_groups(small), 1e-3, 1.0).state_dict()
    sd["state"][0]["lr"] = torch.ones(5, 1)
    opt = AlraoSGD(alrao_param_groups(big), 1e-3, 1.0)
    with pytest.raises(ValueError, match="'lr' of parameter 0 has shape"):
        opt.load_state_dict(sd)
    other = nn.Linear(3, 6)
    sd_other = AlraoSGD(alrao_param_groups(other), 1e-3, 1.0).state_dict()
    with pytest.raises(ValueError, match="does not fit"):
        opt.load_state_dict(sd_other)


def _groups() -> list[dict[str, Any]]:
    return alrao_param_groups(nn.Linear(2, 2))


BAD_ARGS: list[tuple[Callable[[], object], str]] = [
    (lambda: AlraoSGD(_groups(), 0.0, 1.0), r"Invalid lr_min: 0\.0"),
    (lambda: AlraoSGD(_groups(), -1e-3, 1.0), r"Invalid lr_min"),
    (lambda: AlraoSGD(_groups(), float("nan"), 1.0), r"Invalid lr_min"),
    (lambda: AlraoSGD(_groups(), 1.0, 0.1), r"Invalid lr_max: 0\.1"),
    (lambda: AlraoSGD(_groups(), 1e-3, float("inf")), r"Invalid lr_max"),
    (lambda: AlraoSGD(_groups(), 1e-3, 1.0, momentum=-0.1), r"Invalid momentum value"),
    (lambda: AlraoSGD(_groups(), 1e-3, 1.0, weight_decay=-1.0), r"Invalid weight_decay value"),
    (lambda: AlraoSGD(_groups(), 1e-3, 1.0, nesterov=True), r"Nesterov momentum requires"),
    (lambda: AlraoSGD(_groups(), 1e-3, 1.0, seed=1.5), r"Invalid seed"),  # type: ignore[arg-type]
    (lambda: AlraoSGD([{"params": [torch.zeros(2, requires_grad=True)]}], 1e-3, 1.0), r"missing key"),
    (lambda: AlraoSGD(list(nn.Linear(2, 2).parameters()), 1e-3, 1.0), r"missing key"),  # type: ignore[arg-type]
    (
        lambda: AlraoSGD(
            [{"params": [torch.zeros(3, 2, requires_grad=True)], "feature_dims": [0], "num_features": 4}],
            1e-3,
            1.0,
        ),
        r"Invalid feature set",
    ),
    (
        lambda: AlraoSGD(
            [{**AlraoHead(2, 2, 3, 1e-3, 1.0).param_group(), "fixed_rates": [1.0, 2.0]}], 1e-3, 1.0
        ),
        r"Invalid fixed_rates",
    ),
    (lambda: AlraoAdam(_groups(), 1e-3, 1.0, betas=(1.0, 0.999)), r"Invalid beta parameter at index 0"),
    (lambda: AlraoAdam(_groups(), 1e-3, 1.0, betas=(0.9, -0.1)), r"Invalid beta parameter at index 1"),
    (lambda: AlraoAdam(_groups(), 1e-3, 1.0, eps=-1e-8), r"Invalid epsilon value"),
    (lambda: AlraoAdam(_groups(), 0.0, 1.0), r"Invalid lr_min"),
    (lambda: AlraoHead(4, 3, 1, 1e-3, 1.0), r"Invalid num_copies: 1"),
    (lambda: AlraoHead(4, 3, 4, 1.0, 1e-3), r"Invalid lr_max"),
    (lambda: AlraoHead(4, 3, 4, 0.0, 1e-3), r"Invalid lr_min"),
    (lambda: AlraoHead(4, 3, 4, 1e-3, 1.0, task="ranking"), r"Invalid task"),  # type: ignore[arg-type]
    (lambda: AlraoHead(4, 3, 4, 1e-3, 1.0, impl="slow"), r"Invalid impl"),  # type: ignore[arg-type]
    (lambda: AlraoHead(0, 3, 4, 1e-3, 1.0), r"Invalid in_features"),
    (lambda: AlraoHead(4, 3, 4, 1e-3, 1.0, theta=1.0), r"Invalid theta"),
]


@pytest.mark.parametrize(("build", "message"), BAD_ARGS, ids=[m for _, m in BAD_ARGS])
def test_bad_constructor_args(build: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_step_does_not_mutate_gradients() -> None:
    lin = nn.Linear(3, 4).double()
    for opt in (AlraoSGD(alrao_param_groups(lin), 1e-3, 1.0, foreach=True, momentum=0.9),):
        lin.weight.grad = torch.ones_like(lin.weight)
        lin.bias.grad = torch.ones_like(lin.bias)
        for _ in range(2):
            opt.step()
        assert torch.equal(lin.weight.grad, torch.ones_like(lin.weight))


# -- the flat lists step() reuses between steps ---------------------------------------------------
@pytest.mark.parametrize(("name", "factory"), OPTS, ids=[n for n, _ in OPTS])
def test_cached_step_follows_changes_to_param_groups(
    name: str, factory: Callable[..., torch.optim.Optimizer]
) -> None:
    """A step after hyperparameters change, a group is added or state is loaded equals a fresh
    optimizer's: the cached lists are rebuilt whenever param_groups or the state change."""
    batches = _batches(8)
    body, head = _make()
    cached = factory(alrao_param_groups(body))
    body_ref, head_ref = _make()
    fresh = factory(alrao_param_groups(body_ref))
    _train(body, head, cached, batches[:2])  # builds the cache
    _train(body_ref, head_ref, fresh, batches[:2])
    # 1. a tuner changes a hyperparameter between steps
    for opt in (cached, fresh):
        for group in opt.param_groups:
            group["weight_decay"] = 0.05
    _train(body, head, cached, batches[2:4])
    _train(body_ref, head_ref, fresh, batches[2:4])
    # 2. a group is added (the head's copies) after steps were taken
    cached.add_param_group(head.param_group())
    fresh.add_param_group(head_ref.param_group())
    _train(body, head, cached, batches[4:6])
    _train(body_ref, head_ref, fresh, batches[4:6])
    # 3. state is loaded into an optimizer whose cache is built: its tensors are the ones stepped
    saved = copy.deepcopy(fresh.state_dict())
    cached.load_state_dict(copy.deepcopy(saved))
    _train(body, head, cached, batches[6:])
    _train(body_ref, head_ref, fresh, batches[6:])
    for a, b in zip(
        [*body.parameters(), *head.parameters()],
        [*body_ref.parameters(), *head_ref.parameters()],
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        for key in fresh.state[b]:
            torch.testing.assert_close(cached.state[a][key], fresh.state[b][key], rtol=0, atol=0)
    assert int(cached.state_dict()["state"][0]["step"]) == 8


def test_state_dict_sees_the_cached_steps_updates() -> None:
    body, head = _make()
    opt = AlraoSGD([*alrao_param_groups(body), head.param_group()], 1e-3, 1.0, momentum=0.9)
    _train(body, head, opt, _batches(3))
    sd = opt.state_dict()
    assert all(int(st["step"]) == 3 and "momentum_buffer" in st for st in sd["state"].values())
    # a deep copy (pickling) drops the cache: the copy steps its own parameters and state
    body2, head2, opt2 = copy.deepcopy((body, head, opt))
    _train(body2, head2, opt2, _batches(1))
    assert int(opt.state_dict()["state"][0]["step"]) == 3
    assert int(opt2.state_dict()["state"][0]["step"]) == 4
    assert not torch.equal(body.lin.weight, body2.lin.weight)

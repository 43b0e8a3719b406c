"""The re-centring switch: ``_AlraoOptimizer.redraw_rates`` and ``AlraoScreener(recentre_after=...)``."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from archscreen.core.alrao import AlraoAdam, AlraoHead, AlraoSGD, alrao_param_groups, preferred_lr
from archscreen.core.screening import AlraoScreener, Screener, ScreenResult
from archscreen.core.spec import parse_spec
from archscreen.core.training.loop import Callback, Progress, TrainConfig, TrainingCancelled
from archscreen.core.training.model import ScreenModel
from archscreen.testing import ScreenerContract
from archscreen.testing._data import TINY_MLP, digits


class _Body(nn.Module):
    """Every rate layout: a linear layer, an LSTM (4 gate rows per unit), a 2-d LayerNorm
    (one feature per element, ``feature_dim=None``) and a conv."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 4)
        self.rnn = nn.LSTM(4, 5, batch_first=True)
        self.ln = nn.LayerNorm((6, 5))
        self.conv = nn.Conv1d(5, 3, 3, padding=1)
        self.lin = nn.Linear(3, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.emb(x))
        h = self.conv(self.ln(h).transpose(1, 2)).mean(-1)
        return torch.tanh(self.lin(h))


def _make(seed: int = 0) -> tuple[_Body, AlraoHead]:
    torch.manual_seed(seed)
    return _Body().double(), AlraoHead(7, 5, 3, 1e-3, 1.0).double()


def _batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(123)
    return [
        (torch.randint(0, 11, (4, 6), generator=g), torch.randint(0, 5, (4,), generator=g)) for _ in range(n)
    ]


def _train(body: _Body, head: AlraoHead, opt: torch.optim.Optimizer, batches: list[Any]) -> None:
    for x, y in batches:
        opt.zero_grad()
        out = head(body(x), y)
        out.loss.backward()
        opt.step()
        head.switch.update(out.copy_loglik)


OPTS: dict[str, Any] = {
    "sgd": lambda groups, **kw: AlraoSGD(groups, 1e-3, 1.0, **kw),
    "sgd_momentum": lambda groups, **kw: AlraoSGD(groups, 1e-3, 1.0, momentum=0.9, **kw),
    "adam": lambda groups, **kw: AlraoAdam(groups, 1e-4, 1e-1, **kw),
}


def _built(name: str = "adam", seed: int = 0, **kw: Any) -> tuple[_Body, AlraoHead, Any]:
    body, head = _make()
    return body, head, OPTS[name]([*alrao_param_groups(body), head.param_group()], seed=seed, **kw)


def _is_head(group: dict[str, Any]) -> bool:
    return group["kind"] == "alrao_head"


# -- the optimizer ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(OPTS))
def test_redraw_moves_the_body_into_the_range_and_leaves_the_head(name: str) -> None:
    body, head, opt = _built(name)
    _train(body, head, opt, _batches(3))
    before = opt.feature_rates()
    lr_before = {p: opt.state[p]["lr"] for g in opt.param_groups for p in g["params"]}
    opt.redraw_rates(0.02, 0.05)
    after = opt.feature_rates()
    assert _is_head(opt.param_groups[-1]) and len(after) == len(opt.param_groups) > 2
    for group, old, new in zip(opt.param_groups, before, after, strict=True):
        if _is_head(group):
            assert torch.equal(old, new)  # the copies keep their log-spaced rates
            assert group["lr_min"] != 0.02
            continue
        assert float(new.min()) >= 0.02 * (1 - 1e-12) and float(new.max()) <= 0.05 * (1 + 1e-12)
        assert not torch.equal(old, new)
        assert group["lr_min"] == 0.02 and group["lr_max"] == 0.05
        # laid out as at construction: one rate per unit, the same for all its gate rows and
        # for weight and bias; written into the very tensors the optimizer had
        for p, fd, gc in zip(group["params"], group["feature_dims"], group["gate_counts"], strict=True):
            lr = opt.state[p]["lr"]
            assert lr is lr_before[p]
            expected = new.repeat(gc)
            torch.testing.assert_close(lr.reshape(-1), expected, rtol=0, atol=0)
            if fd is not None:
                assert lr.shape[fd] == p.shape[fd] and lr.numel() == p.shape[fd]
            else:
                assert lr.shape == p.shape


def test_redraw_is_deterministic_per_seed_and_in_group_order() -> None:
    *_, a = _built(seed=3)
    *_, b = _built(seed=3)
    *_, c = _built(seed=4)
    for opt in (a, b, c):
        opt.redraw_rates(1e-3, 1e-2)
    for ra, rb in zip(a.feature_rates(), b.feature_rates(), strict=True):
        assert torch.equal(ra, rb)
    assert not torch.equal(a.feature_rates()[0], c.feature_rates()[0])
    # a subset is drawn in group order, whatever order it is given in
    *_, d = _built(seed=3)
    *_, e = _built(seed=3)
    d.redraw_rates(1e-3, 1e-2, groups=[0, 2])
    e.redraw_rates(1e-3, 1e-2, groups=(2, 0))
    assert all(torch.equal(x, y) for x, y in zip(d.feature_rates(), e.feature_rates(), strict=True))
    *_, untouched = _built(seed=3)
    assert torch.equal(d.feature_rates()[1], untouched.feature_rates()[1])
    assert not torch.equal(d.feature_rates()[2], untouched.feature_rates()[2])


@pytest.mark.parametrize("name", sorted(OPTS))
def test_redraw_leaves_moments_buffers_and_steps(name: str) -> None:
    body, head, opt = _built(name)
    _train(body, head, opt, _batches(4))
    before = copy.deepcopy(opt.state_dict()["state"])
    opt.redraw_rates(1e-3, 1e-2)
    after = opt.state_dict()["state"]
    assert before.keys() == after.keys()
    keys = {k for st in before.values() for k in st}
    assert keys >= {"lr", "step"} and len(keys) >= (3 if name != "sgd" else 2)
    changed = 0
    for idx, st in before.items():
        assert st.keys() == after[idx].keys()
        for key, value in st.items():
            if key == "lr":
                changed += not torch.equal(value, after[idx][key])
            else:
                assert torch.equal(value, after[idx][key]), key
    assert changed > 0


def test_step_after_redraw_uses_the_new_rates() -> None:
    """The flat lists step() reuses (built by earlier steps) see the new rates."""
    lin = nn.Linear(3, 4).double()
    opt = AlraoSGD(alrao_param_groups(lin), 1e-3, 1.0)
    for _ in range(2):  # builds and uses the cache
        lin.weight.grad = torch.ones_like(lin.weight)
        lin.bias.grad = torch.ones_like(lin.bias)
        opt.step()
    opt.redraw_rates(0.25, 0.25)
    w0, b0 = lin.weight.detach().clone(), lin.bias.detach().clone()
    lin.weight.grad = torch.ones_like(lin.weight)
    lin.bias.grad = torch.ones_like(lin.bias)
    opt.step()
    torch.testing.assert_close(w0 - lin.weight.detach(), torch.full((4, 3), 0.25, dtype=torch.float64))
    torch.testing.assert_close(b0 - lin.bias.detach(), torch.full((4,), 0.25, dtype=torch.float64))


@pytest.mark.parametrize("name", sorted(OPTS))
def test_foreach_equals_reference_after_a_redraw(name: str) -> None:
    batches = _batches(6)
    runs = []
    for foreach in (False, True):
        body, head, opt = _built(name, foreach=foreach)
        _train(body, head, opt, batches[:3])
        opt.redraw_rates(1e-2, 0.3)
        _train(body, head, opt, batches[3:])
        runs.append((body, head, opt))
    (b0, h0, o0), (b1, h1, o1) = runs
    for a, b in zip([*b0.parameters(), *h0.parameters()], [*b1.parameters(), *h1.parameters()], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=1e-15)
        for key in o0.state[a]:
            torch.testing.assert_close(o0.state[a][key], o1.state[b][key], rtol=1e-13, atol=1e-15)
    # the redraw mattered: without it the parameters end elsewhere
    body, head, opt = _built(name)
    _train(body, head, opt, batches)
    assert not torch.equal(body.lin.weight, b1.lin.weight)


@pytest.mark.parametrize("name", sorted(OPTS))
def test_state_dict_round_trip_after_redraw(name: str) -> None:
    batches = _batches(8)
    body, head, opt = _built(name, seed=5)
    _train(body, head, opt, batches[:2])
    opt.redraw_rates(1e-2, 0.1)
    _train(body, head, opt, batches[2:4])
    saved = copy.deepcopy({"body": body.state_dict(), "head": head.state_dict(), "opt": opt.state_dict()})
    assert saved["opt"]["param_groups"][0]["lr_min"] == 1e-2
    assert saved["opt"]["param_groups"][-1]["lr_min"] != 1e-2  # the head's range is not the new one
    _train(body, head, opt, batches[4:])
    # into a fresh optimizer built with another seed (other rates, the constructor's range)
    body2, head2, opt2 = _built(name, seed=6)
    body2.load_state_dict(saved["body"])
    head2.load_state_dict(saved["head"])
    opt2.load_state_dict(saved["opt"])
    assert [(g["lr_min"], g["lr_max"]) for g in opt2.param_groups] == [
        (g["lr_min"], g["lr_max"]) for g in saved["opt"]["param_groups"]
    ]
    assert torch.equal(opt2.state_dict()["state"][0]["lr"], saved["opt"]["state"][0]["lr"])
    _train(body2, head2, opt2, batches[4:])
    for a, b in zip(
        [*body.parameters(), *head.parameters()], [*body2.parameters(), *head2.parameters()], strict=True
    ):
        assert torch.equal(a, b)
    assert all(torch.equal(x, y) for x, y in zip(opt.feature_rates(), opt2.feature_rates(), strict=True))


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((0.0, 1.0), {}, "Invalid lr_min"),
        ((-1e-3, 1.0), {}, "Invalid lr_min"),
        ((1e-2, 1e-3), {}, "Invalid lr_max"),
        ((1e-3, math.nan), {}, "Invalid lr_max"),
        ((1e-3, math.inf), {}, "Invalid lr_max"),
        ((1e-3, 1e-2), {"groups": [5]}, "has fixed_rates"),  # the head
        ((1e-3, 1e-2), {"groups": [6]}, "Invalid group index"),
        ((1e-3, 1e-2), {"groups": [-1]}, "Invalid group index"),
        ((1e-3, 1e-2), {"groups": [True]}, "Invalid group index"),
        ((1e-3, 1e-2), {"groups": [0, 1, 0]}, "given twice"),
    ],
)
def test_redraw_refuses_bad_arguments_and_changes_nothing(
    args: tuple[float, float], kwargs: dict[str, Any], message: str
) -> None:
    *_, opt = _built()
    assert len(opt.param_groups) == 6 and _is_head(opt.param_groups[5])
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=message):
        opt.redraw_rates(*args, **kwargs)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    assert all(torch.equal(before["state"][i]["lr"], after["state"][i]["lr"]) for i in before["state"])
    # nor the generator: the next draw is the one an untouched optimizer makes
    *_, fresh = _built()
    opt.redraw_rates(1e-3, 1e-2)
    fresh.redraw_rates(1e-3, 1e-2)
    assert all(torch.equal(x, y) for x, y in zip(opt.feature_rates(), fresh.feature_rates(), strict=True))


# -- the screener -----------------------------------------------------------------------------------
CONFIG = TrainConfig(max_epochs=3, patience=5, batch_size=64, max_steps_per_epoch=8)


@dataclass
class _Watched(AlraoScreener):
    """AlraoScreener that records, at the end of every epoch (after its own hook), the preferred
    rate and the optimizer's rates and group ranges."""

    seen: list[dict[str, Any]] = field(default_factory=list)
    redraws: int = 0
    optimizer: AlraoAdam | AlraoSGD | None = None

    def epoch_hook(self, model: ScreenModel, optimizer: torch.optim.Optimizer) -> Callback | None:
        own = super().epoch_hook(model, optimizer)
        head, opt = model.head, optimizer
        assert isinstance(head, AlraoHead) and isinstance(opt, AlraoAdam | AlraoSGD)
        self.optimizer = opt
        self.seen.append({"epoch": 0, "rates": opt.feature_rates(), "ranges": _ranges(opt)})
        redraw = opt.redraw_rates

        def counted(*args: Any, **kwargs: Any) -> None:
            self.redraws += 1
            redraw(*args, **kwargs)

        opt.redraw_rates = counted  # type: ignore[method-assign]

        def watch(p: Progress) -> None:
            pref = preferred_lr(head)  # the redraw does not change the posterior
            if own is not None:
                own(p)
            self.seen.append(
                {"epoch": p.epoch, "preferred": pref, "rates": opt.feature_rates(), "ranges": _ranges(opt)}
            )

        return watch


def _ranges(opt: torch.optim.Optimizer) -> list[tuple[float, float]]:
    return [(g["lr_min"], g["lr_max"]) for g in opt.param_groups]


def _values(r: ScreenResult) -> list[tuple[Any, ...]]:
    """The curves without wall-clock times."""
    return [(c["epoch"], c["train_loss"], c["val_loss"], c["val_accuracy"]) for c in r.curves]


def test_off_by_default_and_off_is_the_paper() -> None:
    data = digits()
    default = AlraoScreener(num_copies=4)
    assert default.recentre_after is None and default.recentre_width == 1.0
    off = AlraoScreener(num_copies=4, recentre_after=None, recentre_width=3.0)
    model, opt = off.build(parse_spec(TINY_MLP), data)
    assert off.epoch_hook(model, opt) is None  # screen() passes the caller's callback as it is
    a, b = default.screen(TINY_MLP, data, CONFIG), off.screen(TINY_MLP, data, CONFIG)
    assert _values(a) == _values(b) and a.val_loss == b.val_loss and a.preferred_lr == b.preferred_lr


def test_recentre_after_one_draws_the_body_around_the_preferred_rate() -> None:
    data = digits()
    width = 0.5
    watched = _Watched(num_copies=4, recentre_after=1, recentre_width=width)
    users: list[list[torch.Tensor]] = []

    def user(p: Progress) -> None:
        assert watched.optimizer is not None
        users.append(watched.optimizer.feature_rates())

    on = watched.screen(TINY_MLP, data, CONFIG, callback=user)
    assert watched.redraws == 1 and [s["epoch"] for s in watched.seen] == [0, 1, 2, 3]
    init, first, *later = watched.seen
    p = first["preferred"]
    lo, hi = p * 10 ** (-width / 2), p * 10 ** (width / 2)
    body_init = torch.cat(init["rates"][:-1])
    body_new = torch.cat(first["rates"][:-1])
    # the draw at initialisation, in (1e-4, 0.1), mostly lies outside the half-decade around p
    assert float(((body_init < lo) | (body_init > hi)).float().mean()) > 0.3
    assert float(body_new.min()) >= lo * (1 - 1e-6) and float(body_new.max()) <= hi * (1 + 1e-6)
    assert float(body_new.max() / body_new.min()) > 10 ** (width * 0.8)  # spread over the range
    assert torch.equal(first["rates"][-1], init["rates"][-1])  # the copies keep theirs
    assert first["ranges"][:-1] == [(pytest.approx(lo), pytest.approx(hi))] * (len(first["ranges"]) - 1)
    assert first["ranges"][-1] == init["ranges"][-1]
    # the caller's callback runs after the screener's hook: it sees the new rates at epoch 1
    assert len(users) == 3 and all(torch.equal(x, y) for x, y in zip(users[0], first["rates"], strict=True))
    # once: the later epochs keep the rates drawn after epoch 1
    for s in later:
        assert all(torch.equal(x, y) for x, y in zip(s["rates"], first["rates"], strict=True))
    # epoch 1 is the paper's run; from epoch 2 on the new rates train
    off = AlraoScreener(num_copies=4).screen(TINY_MLP, data, CONFIG)
    assert on.curves[0]["train_loss"] == off.curves[0]["train_loss"]
    assert on.curves[0]["val_loss"] == off.curves[0]["val_loss"]
    assert on.curves[1]["train_loss"] != off.curves[1]["train_loss"]


def test_a_cancel_from_the_callers_callback_still_ends_the_run() -> None:
    def cancel(p: Progress) -> None:
        raise TrainingCancelled

    watched = _Watched(num_copies=4, recentre_after=1)
    r = watched.screen(TINY_MLP, digits(), CONFIG, callback=cancel)
    assert r.stopped_because == "cancelled" and r.epochs == 1
    assert watched.redraws == 1  # the hook ran first


def test_resumed_after_the_warm_up_does_not_redraw(tmp_path: Path) -> None:
    data = digits()
    ckpt = tmp_path / "run.pt"

    def die_at_2(p: Progress) -> None:
        if p.epoch == 2:
            raise SystemExit("worker died")  # the checkpoint of epoch 1 (after the redraw) remains

    first = _Watched(num_copies=4, recentre_after=1)
    with pytest.raises(SystemExit):
        first.screen(TINY_MLP, data, CONFIG, callback=die_at_2, checkpoint_path=ckpt)
    assert first.redraws == 1
    resumed = _Watched(num_copies=4, recentre_after=1)
    r = resumed.screen(TINY_MLP, data, CONFIG, checkpoint_path=ckpt)
    assert resumed.redraws == 0
    # the resumed run trains with the rates drawn after epoch 1 (from the checkpoint)
    assert [s["epoch"] for s in resumed.seen] == [0, 2, 3]
    drawn = first.seen[1]["rates"]
    assert all(torch.equal(x, y) for x, y in zip(resumed.seen[1]["rates"], drawn, strict=True))
    full = AlraoScreener(num_copies=4, recentre_after=1).screen(TINY_MLP, data, CONFIG)
    assert r.val_loss == full.val_loss


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"recentre_after": 0}, "recentre_after"),
        ({"recentre_after": -2}, "recentre_after"),
        ({"recentre_after": 1.5}, "recentre_after"),
        ({"recentre_after": True}, "recentre_after"),
        ({"recentre_after": 1, "recentre_width": 0.0}, "recentre_width"),
        ({"recentre_after": 1, "recentre_width": -1.0}, "recentre_width"),
        ({"recentre_after": 1, "recentre_width": math.inf}, "recentre_width"),
        ({"recentre_after": 1, "recentre_width": math.nan}, "recentre_width"),
        ({"recentre_width": "1"}, "recentre_width"),
    ],
)
def test_invalid_switch_values_raise(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AlraoScreener(**kwargs)


class TestRecentringScreenerContract(ScreenerContract):
    """The screener contract with the switch on: deterministic, cancellable, and a run resumed from
    a checkpoint before (recentre_after=2) or after (=1) the warm-up equals the uninterrupted one."""

    @pytest.fixture(params=[1, 2])
    def contract_screener(self, request: pytest.FixtureRequest) -> Screener:
        return AlraoScreener(num_copies=4, recentre_after=request.param, recentre_width=0.5)

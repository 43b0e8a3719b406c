"""Per-feature grouping and per-feature rate draws."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from archscreen.core.alrao import AlraoSGD, alrao_param_groups

LR_MIN, LR_MAX = 1e-5, 10.0


def _opt(body: nn.Module, seed: int = 0) -> AlraoSGD:
    return AlraoSGD(alrao_param_groups(body), LR_MIN, LR_MAX, seed=seed)


def _lr(opt: AlraoSGD, p: torch.Tensor) -> torch.Tensor:
    return opt.state[p]["lr"]


def _log_uniform_pvalue(rates: np.ndarray) -> float:
    u = (np.log(rates) - math.log(LR_MIN)) / (math.log(LR_MAX) - math.log(LR_MIN))
    return float(stats.kstest(u, "uniform").pvalue)


def test_linear_rates_are_log_uniform_ks() -> None:
    lin = nn.Linear(4, 4096, dtype=torch.float64)
    opt = _opt(lin)
    (rates,) = opt.feature_rates()
    assert rates.shape == (4096,)
    assert bool(((rates > LR_MIN) & (rates < LR_MAX)).all())
    assert _log_uniform_pvalue(rates.numpy()) > 0.01
    # sanity: the same check rejects rates that are uniform (not log-uniform) on the range,
    # and log-uniform rates on a narrower range
    rng = np.random.default_rng(0)
    assert _log_uniform_pvalue(rng.uniform(LR_MIN, LR_MAX, 4096)) < 1e-6
    assert _log_uniform_pvalue(np.exp(rng.uniform(math.log(1e-4), math.log(LR_MAX), 4096))) < 1e-6


def test_linear_rows_and_bias_share_rate() -> None:
    lin = nn.Linear(3, 7)
    opt = _opt(lin)
    w_lr, b_lr = _lr(opt, lin.weight), _lr(opt, lin.bias)
    assert w_lr.shape == (7, 1) and b_lr.shape == (7,)
    assert torch.equal(w_lr[:, 0], b_lr)
    assert len(set(b_lr.tolist())) == 7  # distinct units, distinct rates
    (g,) = opt.param_groups
    assert g["kind"] == "linear" and g["num_features"] == 7 and g["feature_dims"] == [0, 0]


class _RNNWrapper(nn.Module):
    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn


@pytest.mark.parametrize(("cls", "gates"), [(nn.LSTM, 4), (nn.GRU, 3)])
def test_recurrent_unit_one_rate_across_gates_and_matrices(cls: type[nn.Module], gates: int) -> None:
    hidden = 5
    body = _RNNWrapper(cls(3, hidden, num_layers=2))
    opt = _opt(body)
    assert len(opt.param_groups) == 2
    per_layer = []
    for layer, group in enumerate(opt.param_groups):
        assert group["kind"] == cls.__name__.lower()
        assert group["num_features"] == hidden and group["gate_counts"] == [gates] * 4
        rnn = body.rnn
        names = [f"weight_ih_l{layer}", f"weight_hh_l{layer}", f"bias_ih_l{layer}", f"bias_hh_l{layer}"]
        lrs = [_lr(opt, getattr(rnn, n)).reshape(-1) for n in names]
        unit_rates = lrs[0][:hidden]
        for lr in lrs:
            assert lr.shape == (gates * hidden,)
            for u in range(hidden):
                rows = lr[[gate * hidden + u for gate in range(gates)]]
                assert bool((rows == unit_rates[u]).all()), f"unit {u} has several rates"
        assert len(set(unit_rates.tolist())) == hidden
        per_layer.append(unit_rates)
    assert not torch.equal(per_layer[0], per_layer[1])


def test_bidirectional_lstm_reverse_is_separate_feature_set() -> None:
    body = _RNNWrapper(nn.LSTM(3, 4, bidirectional=True))
    opt = _opt(body)
    assert len(opt.param_groups) == 2
    fwd, rev = opt.feature_rates()
    assert not torch.equal(fwd, rev)
    assert opt.state[body.rnn.weight_hh_l0_reverse]["lr"].shape == (16, 1)


def test_conv_per_filter_including_grouped_and_depthwise() -> None:
    body = nn.Sequential(
        nn.Conv2d(4, 6, 3, groups=2),
        nn.Conv2d(6, 6, 3, groups=6, bias=False),
        nn.Conv1d(2, 5, 3),
    )
    opt = _opt(body)
    assert [g["num_features"] for g in opt.param_groups] == [6, 6, 5]
    c0, c1, c2 = body
    assert _lr(opt, c0.weight).shape == (6, 1, 1, 1)
    assert torch.equal(_lr(opt, c0.weight).reshape(-1), _lr(opt, c0.bias))
    assert _lr(opt, c1.weight).shape == (6, 1, 1, 1)
    assert _lr(opt, c2.weight).shape == (5, 1, 1)
    assert torch.equal(_lr(opt, c2.weight).reshape(-1), _lr(opt, c2.bias))


def test_embedding_per_column() -> None:
    emb = nn.Embedding(50, 8)
    opt = _opt(emb)
    lr = _lr(opt, emb.weight)
    assert lr.shape == (1, 8)
    assert opt.param_groups[0]["feature_dims"] == [1]
    assert len(set(lr.reshape(-1).tolist())) == 8


def test_norm_layers_per_channel() -> None:
    body = nn.Sequential(nn.BatchNorm2d(6), nn.BatchNorm1d(3), nn.LayerNorm(7), nn.LayerNorm((2, 3)))
    opt = _opt(body)
    bn2, bn1, ln1, ln2 = body
    for mod, n in [(bn2, 6), (bn1, 3), (ln1, 7)]:
        assert _lr(opt, mod.weight).shape == (n,)
        assert torch.equal(_lr(opt, mod.weight), _lr(opt, mod.bias))
    assert _lr(opt, ln2.weight).shape == (2, 3)
    assert torch.equal(_lr(opt, ln2.weight), _lr(opt, ln2.bias))
    assert len(set(_lr(opt, ln2.weight).reshape(-1).tolist())) == 6
    assert [g["kind"] for g in opt.param_groups] == ["batchnorm", "batchnorm", "layernorm", "layernorm"]


def test_affine_free_norm_has_no_group() -> None:
    assert alrao_param_groups(nn.Sequential(nn.BatchNorm1d(3, affine=False), nn.ReLU())) == []


class _Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))


def test_unsupported_module_raises_type_error() -> None:
    with pytest.raises(TypeError, match="PReLU"):
        alrao_param_groups(nn.Sequential(nn.Linear(2, 2), nn.PReLU()))
    with pytest.raises(TypeError, match="_Custom"):
        alrao_param_groups(nn.Sequential(_Custom()))


def test_tied_weights_rejected() -> None:
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    b.weight = a.weight
    with pytest.raises(ValueError, match="tied"):
        alrao_param_groups(nn.Sequential(a, b))


def test_seed_determines_rates() -> None:
    body = nn.Sequential(nn.Linear(3, 16), nn.Linear(16, 16))
    r0 = _opt(body, seed=0).feature_rates()
    r0b = _opt(body, seed=0).feature_rates()
    r1 = _opt(body, seed=1).feature_rates()
    assert all(torch.equal(a, b) for a, b in zip(r0, r0b, strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(r0, r1, strict=True))
    assert not torch.equal(r0[0], r0[1])  # layers draw different rates

"""Tiny end-to-end Alrao run: an MLP learns a separable problem; the Switch picks copies."""

from __future__ import annotations

import torch
from torch import nn

from archscreen.core.alrao import AlraoHead, AlraoSGD, alrao_param_groups, posterior_table


def test_mlp_learns_and_posterior_moves() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 10, generator=g) * 3
    y = torch.randint(0, 4, (2048,), generator=g)
    x = centers[y] + torch.randn(2048, 10, generator=g)
    # tanh units: the paper assumes some protection against units with too large a rate
    body = nn.Sequential(nn.Linear(10, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh())
    head = AlraoHead(64, 4, 6, 1e-5, 10.0)
    opt = AlraoSGD([*alrao_param_groups(body), head.param_group()], 1e-5, 10.0, seed=0)
    losses = []
    perm = torch.randperm(2048, generator=g)
    for i in range(0, 2048, 32):
        idx = perm[i : i + 32]
        out = head(body(x[idx]), y[idx])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        head.switch.update(out.copy_loglik)
        losses.append(float(out.avg_nll))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.2 * first, (first, last)
    with torch.no_grad():
        acc = (head.predict(body(x)).argmax(-1) == y).float().mean()
    assert float(acc) > 0.9
    weights = torch.tensor([row["weight"] for row in posterior_table(head)])
    assert float(weights.max() - weights.min()) > 0.2  # far from uniform (1/6 each)
    assert int(weights.argmax()) >= 3  # the slowest copies (1e-5, 1.6e-4) did not win

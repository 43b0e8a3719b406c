"""The body-rate-range switch: ``core.alrao.with_rate_range`` and ``AlraoScreener(body_lr_min=...)``."""

from __future__ import annotations

import pytest
import torch

from archscreen.core.alrao import alrao_param_groups, with_rate_range
from archscreen.core.data import load_dataset
from archscreen.core.screening import AlraoScreener
from archscreen.core.spec import parse_spec

SPEC = parse_spec({"name": "mlp", "head": "classifier", "layers": ["flatten", {"linear": 200}, "sigmoid"]})


def _rates(screener: AlraoScreener) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    _, opt = screener.build(SPEC, load_dataset("digits"))
    rates = opt.feature_rates()  # type: ignore[attr-defined]
    return torch.cat([r.flatten() for r in rates[:-1]]), rates[-1]


def test_default_draws_the_body_from_the_copies_range() -> None:
    body, copies = _rates(AlraoScreener())
    assert float(body.min()) < 1e-3  # 200 log-uniform draws in (1e-4, 0.1): some below 1e-3
    assert float(copies.min()) == pytest.approx(1e-4, rel=1e-5)


def test_body_range_switch_moves_the_body_only() -> None:
    body, copies = _rates(AlraoScreener(body_lr_min=1e-3))
    assert float(body.min()) >= 1e-3 * (1 - 1e-6) and float(body.max()) <= 0.1 * (1 + 1e-6)
    _, default_copies = _rates(AlraoScreener())
    assert torch.equal(copies, default_copies)  # the output copies keep (1e-4, 0.1)


def test_with_rate_range_copies_groups_and_refuses_bad_ranges() -> None:
    groups = alrao_param_groups(torch.nn.Linear(3, 4))
    ranged = with_rate_range(groups, 1e-3, 0.1)
    assert all(g["lr_min"] == 1e-3 and g["lr_max"] == 0.1 for g in ranged)
    assert all("lr_min" not in g for g in groups)  # the input is not changed
    with pytest.raises(ValueError, match="body rate range"):
        with_rate_range(groups, 0.1, 1e-3)
    with pytest.raises(ValueError, match="body rate range"):
        AlraoScreener(body_lr_min=0.5).build(SPEC, load_dataset("digits"))

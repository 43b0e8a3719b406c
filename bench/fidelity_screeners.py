"""Yardsticks of the fidelity study that are not product screeners (bench only).

* :class:`FreeRateScreener`: learning-rate-free or schedule-free optimizers at
  their authors' recommended settings: ``schedulefree.AdamWScheduleFree``
  (lr 0.0025, its default), ``prodigyopt.Prodigy`` (lr 1) and
  ``dadaptation.DAdaptSGD`` (lr 1), each on a plain head, trained by the same
  loop and budget as every screener.
* :func:`zero_cost_scores`: proxies computed at initialisation without
  training: SynFlow (Tanaka et al., 2020: the sum of |θ ⊙ ∂R/∂θ| for
  R = 1ᵀ f(1) with every weight replaced by its absolute value) and the
  gradient norm of the loss on one training minibatch (Abdelfattah et al., 2021).
* :func:`lr_range_test`: the learning-rate range test (Smith, 2017) as
  ``torch-lr-finder`` runs it: rates growing exponentially from 1e-7 to 10 over
  100 minibatches, the suggestion at the steepest descent of the smoothed loss;
  the yardstick for Alrao's learning-rate hint.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator
from typing import Any, cast

import torch
from torch import nn

from archscreen.core.data import DatasetSplits
from archscreen.core.screening import FixedRateScreener, Screener
from archscreen.core.spec import ArchSpec
from archscreen.core.training.model import ScreenModel


class _ParamsAtXBetweenSteps:
    """Drive a schedule-free optimizer so that outside ``step`` the weights hold x.

    Schedule-free methods take gradients at the interpolated point y but are
    evaluated at the averaged point x (``optimizer.eval()``). Our training loop
    evaluates and snapshots the best weights between steps, so this wrapper
    switches to y in ``zero_grad`` (before the forward pass) and back to x after
    ``step``: every evaluation, best-epoch snapshot and checkpoint sees x.
    """

    def __init__(self, opt: Any) -> None:
        self.opt = opt
        self.opt.eval()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.opt.train()
        self.opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self.opt.step()
        self.opt.eval()

    def state_dict(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.opt.state_dict())

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return cast(list[dict[str, Any]], self.opt.param_groups)


class FreeRateScreener(Screener):
    """One run of a learning-rate-free (``prodigy``, ``dadapt-sgd``) or schedule-free optimizer."""

    KINDS = ("schedulefree-adamw", "prodigy", "dadapt-sgd")

    def __init__(self, kind: str) -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {self.KINDS}")
        self.kind = kind
        self.name = kind

    def build(self, spec: ArchSpec, data: DatasetSplits) -> tuple[ScreenModel, torch.optim.Optimizer]:
        model, _ = FixedRateScreener(lr=0.1).build(spec, data)
        if self.kind == "schedulefree-adamw":
            import schedulefree

            wrapped = _ParamsAtXBetweenSteps(schedulefree.AdamWScheduleFree(model.parameters(), lr=0.0025))
            return model, cast(torch.optim.Optimizer, wrapped)
        if self.kind == "prodigy":
            from prodigyopt import Prodigy

            return model, Prodigy(model.parameters(), lr=1.0)
        from dadaptation import DAdaptSGD

        return model, DAdaptSGD(model.parameters(), lr=1.0)


def _batches(data: DatasetSplits, batch_size: int, seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(len(data.x_train), generator=gen)
        for i in range(0, len(perm) - batch_size + 1, batch_size):
            idx = perm[i : i + batch_size]
            yield data.x_train[idx], data.y_train[idx]


def zero_cost_scores(
    spec: ArchSpec, data: DatasetSplits, seed: int, batch_size: int = 32
) -> dict[str, float]:
    """``{"synflow": log SynFlow, "grad_norm": log ‖∇L‖}`` at initialisation (higher = predicted better)."""
    torch.manual_seed(seed)
    model, _ = FixedRateScreener(lr=0.1).build(spec, data)
    x, y = next(_batches(data, batch_size, seed))
    model.train()
    model.zero_grad()
    model(x, y).loss.backward()
    grad_norm = math.sqrt(sum(float(p.grad.pow(2).sum()) for p in model.parameters() if p.grad is not None))

    # SynFlow: |θ| in float64, an all-ones input (token models: one real minibatch, since
    # ids cannot be all-ones floats), eval mode so batch norm is the identity at init.
    torch.manual_seed(seed)
    model, _ = FixedRateScreener(lr=0.1).build(spec, data)
    model = model.double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    inp = x[:1] if data.info.input_kind == "tokens" else torch.ones_like(x[:1], dtype=torch.float64)
    feats = model.body(inp)
    head = cast(Any, model.head)
    logits = head.linear(feats) if hasattr(head, "linear") else feats
    logits.sum().backward()
    with torch.no_grad():
        synflow = sum(float((p * p.grad).abs().sum()) for p in model.parameters() if p.grad is not None)
    return {
        "synflow": math.log(synflow) if synflow > 0 and math.isfinite(synflow) else -math.inf,
        "grad_norm": math.log(grad_norm) if grad_norm > 0 and math.isfinite(grad_norm) else -math.inf,
    }


class _LossModel(nn.Module):
    """Adapter for torch-lr-finder: ``model((x, y))`` returns the loss, the criterion passes it on."""

    def __init__(self, model: ScreenModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, xy: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return cast(torch.Tensor, self.model(*xy).loss)


class _PairDataset(torch.utils.data.Dataset[tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]]):
    """Training samples as ``((x, y), y)``, so the adapted model sees the targets it needs."""

    def __init__(self, data: DatasetSplits) -> None:
        self.x, self.y = data.x_train, data.y_train

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        return (self.x[i], self.y[i]), self.y[i]


def lr_range_test(
    spec: ArchSpec, data: DatasetSplits, optimizer: str, seed: int, batch_size: int = 32, num_iter: int = 100
) -> dict[str, Any]:
    """torch-lr-finder's range test and its steepest-descent suggestion (``lr`` None if it gave none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torch_lr_finder import LRFinder

    torch.manual_seed(seed)
    model, _ = FixedRateScreener(lr=0.1).build(spec, data)
    opt: torch.optim.Optimizer
    if optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=1e-7)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=1e-7)
    finder = LRFinder(_LossModel(model), opt, lambda out, _y: out, device="cpu")
    loader = torch.utils.data.DataLoader(
        _PairDataset(data), batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)
    )
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        finder.range_test(loader, end_lr=10, num_iter=num_iter)
    fig, ax = plt.subplots()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            _, suggestion = finder.plot(ax=ax, suggest_lr=True)
    except (ValueError, IndexError):
        suggestion = None
    finally:
        plt.close(fig)
    return {"lr": float(suggestion) if suggestion is not None else None, "steps": len(finder.history["lr"])}

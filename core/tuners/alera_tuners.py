"""The agnostic-rate tuners (Schoenauer Sebag, Schoenauer & Sebag, 2017): SALERA, SPALERA, Ag-Adam.

The optimizers are in :mod:`archscreen.core.tuners.alera`; these are the :class:`Tuner` glue.
Their rates are per layer or per parameter, so the one rate they report is the
parameter-count-weighted geometric mean of the effective rates.
"""

from __future__ import annotations

import math
import statistics

from torch import nn
from torch.optim import Optimizer

from .alera import ALERA, SPALERA, AgAdam
from .page_hinkley import PageHinkley
from .tuner import Tuner

__all__ = ["AgAdamTuner", "SALERATuner"]


def _weighted_geo_mean(pairs: list[tuple[float, int]]) -> float:
    """The geometric mean of rates weighted by parameter counts (1.0 for no parameters)."""
    if sum(n for _, n in pairs) == 0:
        return 1.0
    return math.exp(statistics.fmean([math.log(max(r, 1e-300)) for r, _ in pairs], [n for _, n in pairs]))


class SALERATuner(Tuner):
    """SALERA (layer-wise ALERA) or SPALERA (parameter-wise), each inside the Page-Hinkley guard.

    The recommended rate is the parameter-count-weighted geometric mean of the effective rates.
    Guard deviation (off with ``paper_exact``): Page-Hinkley ``noise_margin=5`` (see
    :class:`~archscreen.core.tuners.PageHinkley`). ``factor`` is the rate divisor on a trigger.
    """

    def __init__(
        self,
        paper_exact: bool = False,
        *,
        parameterwise: bool = False,
        alpha: float = 0.01,
        C: float = 3e-6,
        lam: float = 10.0,
        factor: float = 2.0,
        noise_margin: float = 5.0,
    ) -> None:
        super().__init__(paper_exact)
        self.parameterwise = parameterwise
        self.name = "spalera" if parameterwise else "salera"
        self.alpha, self.C, self.lam, self.factor = alpha, C, lam, factor
        self.noise_margin = 0.0 if paper_exact else noise_margin

    def build_optimizer(self, model: nn.Module, init_lr: float) -> Optimizer:
        cls = SPALERA if self.parameterwise else ALERA
        inner = cls(model.parameters(), lr=init_lr, alpha=self.alpha, C=self.C)
        return PageHinkley(inner, lam=self.lam, factor=self.factor, noise_margin=self.noise_margin)

    def current_lr(self, optimizer: Optimizer) -> float:
        inner = optimizer.optimizer if isinstance(optimizer, PageHinkley) else optimizer
        assert isinstance(inner, ALERA)
        return _weighted_geo_mean(inner.effective_rates())

    def events(self, optimizer: Optimizer) -> dict[str, int]:
        return {"page_hinkley_triggers": optimizer.triggers} if isinstance(optimizer, PageHinkley) else {}


class AgAdamTuner(Tuner):
    """Ag-Adam (``ag-adam``): Adam with the ALERA rate control (no guard, as in the paper).

    Its recommended rate is an *Adam* rate (``base_optimizer == "adam"``).
    """

    name = "ag-adam"
    base_optimizer = "adam"

    def __init__(self, paper_exact: bool = False, *, alpha: float = 0.01, C: float = 3e-6) -> None:
        super().__init__(paper_exact)
        self.alpha, self.C = alpha, C

    def default_init_lr(self) -> float:
        return 1e-3

    def build_optimizer(self, model: nn.Module, init_lr: float) -> Optimizer:
        return AgAdam(model.parameters(), lr=init_lr, alpha=self.alpha, C=self.C)

    def current_lr(self, optimizer: Optimizer) -> float:
        assert isinstance(optimizer, AgAdam)
        return _weighted_geo_mean(optimizer.effective_rates())

"""Every default of a screening (and of the tuning runs that reuse its budget), defined once.

Core's :class:`~archscreen.core.training.loop.TrainConfig` and
:class:`~archscreen.core.screening.AlraoScreener` take their field defaults from :data:`SCREENING`,
and so does the study's :class:`archscreen.config.ScreeningConfig`, from which the REST API's
OpenAPI defaults and the CLI's flags (``screen``, ``grid``, ``tune``, ``submit``) and the CI gate's
``screening:`` section are generated. ``tests/test_defaults.py`` fails when any of them drifts.

Imports nothing but the standard library (no torch, no pydantic), so the API, the client and the
worker read it at no cost, and ``core/`` stays importable alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["SCREENING", "Base", "ScreeningDefaults", "StopRule"]

Base = Literal["sgd", "adam"]
"""Alrao's base optimizer."""
StopRule = Literal["patience", "plateau"]
"""When a run stops early: raw patience, or the curve-aware rule (``TrainConfig.stop_rule``)."""


@dataclass(frozen=True)
class ScreeningDefaults:
    """The default of each screening option (what a study, ``archscreen screen`` and
    ``TrainConfig()`` use when nothing is said).

    The budget (``max_epochs``, ``patience``) is the one measured in ``docs/fidelity.md``: 30 epochs
    and patience 10 (study I's MNIST-1D cap with twice its patience, the ``+patience`` check that
    set the patience; issue 27's held-out table, row "what was measured"). The held-out budget sweep
    (issue 27, item 2) changes these two values here and nowhere else.
    """

    max_epochs: int = 30
    patience: int = 10
    batch_size: int = 32  # the Alrao paper's
    base: Base = "adam"  # docs/fidelity.md, study I
    # the curve-aware stop rule: off ("patience"); its parts as measured in docs/fidelity.md (study II)
    stop_rule: StopRule = "patience"
    plateau_ema: float = 0.3
    plateau_tol: float = 1e-3
    plateau_min_steps: int = 1000
    plateau_min_epochs: int = 5
    # the Switch's prior θ of "may still switch": the paper's 0.999 (the authors' code: 0.9999)
    switch_theta: float = 0.999
    # re-centring the body's rates (off: recentre_after None); its width when on, in decades
    recentre_width: float = 1.0


SCREENING = ScreeningDefaults()
"""The defaults themselves: read, never copied."""

"""Learning-rate tuning: the tuner registry, and the one import for everything tuning.

After Alrao screening ranks the architectures, each promoted candidate is trained once with
an adaptive rate started from the Alrao posterior (:func:`initial_lr_from_screen`); the rate
the tuner settles on is the recommended learning rate, reported with its trajectory.

Tuners (registry :data:`TUNERS`, each passing :class:`archscreen.testing.TunerContract`):

* ``fd2`` -- :class:`FD2Tuner`: Newton on the rate by finite differences (Ravaut & Gorti);
* ``fd1`` -- :class:`FD1Tuner`: gradient descent on the rate (same paper, first order);
* ``salera`` -- :class:`SALERATuner`: layer-wise ALERA + Page-Hinkley guard;
* ``spalera`` -- :class:`SALERATuner` (parameter-wise);
* ``ag-adam`` -- :class:`AgAdamTuner`: Adam with the agnostic rate control;
* ``fd2-adam`` -- :class:`FD2AdamTuner`: fd2's Newton step on Adam's direction (the default
  after an Alrao-Adam screening, :func:`archscreen.core.names.default_tuner_for`).

Every tuner's deliberate departures from its paper are switches; ``paper_exact=True`` turns
all of them off. The optimizers live in :mod:`archscreen.core.tuners`; the rates are
``param_groups``/state entries changed between steps, so a run resumes from the training
loop's checkpoint exactly (the thinned trajectory is optimizer state too).

Where the parts live (this module re-exports their public names):

* the :class:`Tuner` base and :class:`TuningResult`: :mod:`archscreen.core.tuners.tuner`
  (the run harness shared with the screeners: :mod:`archscreen.core.runs`);
* the implementations: :mod:`archscreen.core.tuners.fd_tuners`,
  :mod:`archscreen.core.tuners.alera_tuners`;
* the start from a screening: :mod:`archscreen.core.tuners.start`;
* the tuning stage's options (where and how many runs start, successive halving over starts):
  :mod:`archscreen.core.tuners.stage`;
* fd2's functional trial losses: :mod:`archscreen.core.tuners.functional`;
* the trajectory and its recommendation rules: :mod:`archscreen.core.tuners.trajectory`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from archscreen.core.names import TUNER_NAMES, TunerName
from archscreen.core.tuners.alera_tuners import AgAdamTuner, SALERATuner
from archscreen.core.tuners.fd_tuners import FD1Tuner, FD2AdamTuner, FD2Tuner
from archscreen.core.tuners.functional import batched_functional_loss, functional_loss
from archscreen.core.tuners.start import (
    initial_lr_from_screen,
    posterior_fits_tuner,
    posterior_quantile,
    posterior_starts,
    screening_optimizer,
)
from archscreen.core.tuners.trajectory import TRAJECTORY_KEY, Trajectory, converged
from archscreen.core.tuners.tuner import Tuner, TuningResult

__all__ = [
    "TRAJECTORY_KEY",
    "TUNERS",
    "AgAdamTuner",
    "FD1Tuner",
    "FD2AdamTuner",
    "FD2Tuner",
    "SALERATuner",
    "Trajectory",
    "Tuner",
    "TuningResult",
    "batched_functional_loss",
    "converged",
    "functional_loss",
    "get_tuner",
    "initial_lr_from_screen",
    "posterior_fits_tuner",
    "posterior_quantile",
    "posterior_starts",
    "screening_optimizer",
]

# Keyed by :data:`archscreen.core.names.TunerName` (the API and CLI read the names from there).
TUNERS: dict[TunerName, Callable[..., Tuner]] = {
    "fd2": FD2Tuner,
    "fd1": FD1Tuner,
    "salera": lambda paper_exact=False, **kw: SALERATuner(paper_exact, parameterwise=False, **kw),
    "spalera": lambda paper_exact=False, **kw: SALERATuner(paper_exact, parameterwise=True, **kw),
    "ag-adam": AgAdamTuner,
    "fd2-adam": FD2AdamTuner,
}
assert tuple(TUNERS) == TUNER_NAMES, "core/names.py TunerName and TUNERS list different tuners"


def get_tuner(name: str, paper_exact: bool = False, **kwargs: Any) -> Tuner:
    """A tuner from the registry by name (:data:`archscreen.core.names.TUNER_NAMES`)."""
    try:
        factory = TUNERS[name]  # type: ignore[index]  # a str from the caller, checked here
    except KeyError:
        raise ValueError(f"unknown tuner {name!r}; choose from {', '.join(TUNERS)}") from None
    return factory(paper_exact=paper_exact, **kwargs)

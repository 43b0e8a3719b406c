"""Learning-rate tuners as ``torch.optim`` optimizers.

* :class:`FD2SGD`, :class:`FD2Adam`, :class:`FD1SGD` -- finite-difference tuning of the rate
  (Ravaut & Gorti, 2018; FD2Adam on Adam's direction);
* :class:`ALERA`, :class:`SPALERA`, :class:`AgAdam` -- agnostic rate adaptation
  (Schoenauer Sebag, Schoenauer & Sebag, 2017);
* :class:`PageHinkley` -- the catastrophe guard around any optimizer (SALERA = ALERA + guard).

The training-side glue: :mod:`.tuner` (the :class:`Tuner` base, results), :mod:`.fd_tuners`,
:mod:`.alera_tuners`; the registry is :mod:`archscreen.core.tuning`. Those modules import the
training loop, so this package's ``__init__`` does not import them.
"""

from .alera import ALERA, SPALERA, AgAdam, agnostic_moments
from .fd import FD1SGD, FD2SGD, FD2Adam, newton_rate_step
from .page_hinkley import PageHinkley

__all__ = [
    "ALERA",
    "FD1SGD",
    "FD2SGD",
    "SPALERA",
    "AgAdam",
    "FD2Adam",
    "PageHinkley",
    "agnostic_moments",
    "newton_rate_step",
]

"""Learning-rate tuners as ``torch.optim`` optimizers.

* :class:`FD2SGD`, :class:`FD1SGD` -- finite-difference tuning of the rate (Ravaut & Gorti, 2018);
* :class:`ALERA`, :class:`SPALERA`, :class:`AgAdam` -- agnostic rate adaptation
  (Schoenauer Sebag, Schoenauer & Sebag, 2017);
* :class:`PageHinkley` -- the catastrophe guard around any optimizer (SALERA = ALERA + guard).

The training-side glue (registry, ``tune()``, results) is :mod:`archscreen.core.tuning`.
"""

from .alera import ALERA, SPALERA, AgAdam, agnostic_moments
from .fd import FD1SGD, FD2SGD, newton_rate_step
from .page_hinkley import PageHinkley

__all__ = [
    "ALERA",
    "FD1SGD",
    "FD2SGD",
    "SPALERA",
    "AgAdam",
    "PageHinkley",
    "agnostic_moments",
    "newton_rate_step",
]

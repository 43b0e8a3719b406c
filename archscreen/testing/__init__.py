"""Contract test suites for new tuners, screeners and datasets, importable like ``optuna.testing``.

A new implementation gets the whole suite from one subclass (pytest collects it like any
``Test*`` class)::

    from archscreen.testing import TunerContract

    class TestMyTuner(TunerContract):
        tuner = MyTuner()

:class:`ScreenerContract` (``screener = ...``) and :class:`DatasetContract` (``dataset = ...``)
work the same way. To run one suite over several implementations, override the suite's
fixture (``contract_tuner``, ``contract_screener``, ``contract_dataset``) with a parametrized
one. Needs ``pytest`` (a test dependency, not a runtime one).
"""

from __future__ import annotations

from .dataset import DatasetContract
from .screener import ScreenerContract
from .tuner import TunerContract

__all__ = ["DatasetContract", "ScreenerContract", "TunerContract"]

"""Screeners: train a candidate once and estimate its best-learning-rate score.

A :class:`Screener` turns ``(spec, dataset)`` into a :class:`ScreenResult`. All
screeners share one training loop (:mod:`archscreen.core.training.loop`) and
one budget accounting (steps and wall time), so the fidelity study compares
them fairly. Implementations:

* :class:`AlraoScreener`: the product. Per-feature random rates in the body,
  ``num_copies`` output layers with log-spaced rates, Switch averaging
  (Blier et al., 2019). ``base="adam"`` (our default, chosen by the fidelity
  study, ``docs/fidelity.md``) or ``"sgd"`` (the paper's default).
* :class:`FixedRateScreener`: plain ``torch.optim.SGD`` or ``torch.optim.Adam``
  at one fixed rate. Used for the learning-rate-grid ground truth and for the
  baseline a user would run instead (Adam at 1e-3).

Every screener passes :class:`archscreen.testing.ScreenerContract` (``tests/core/test_screening.py``).
The run itself (parse, validate, seed, build, train) is :func:`archscreen.core.runs.start_run`,
shared with the tuners.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from archscreen.core.alrao import AlraoAdam, AlraoHead, AlraoSGD, alrao_param_groups, with_rate_range
from archscreen.core.alrao import posterior_table as _posterior_table
from archscreen.core.alrao import preferred_lr as _preferred_lr
from archscreen.core.data import DatasetSplits
from archscreen.core.defaults import SCREENING
from archscreen.core.estimate import estimate_for_curves
from archscreen.core.runs import RUN_FIELDS, RunResult, SpecLike, plain_model, start_run
from archscreen.core.spec import ArchSpec, build_body, feature_shape, parse_spec
from archscreen.core.training.loop import Callback, Progress, StepHook, TrainConfig
from archscreen.core.training.model import ScreenModel, head_out_features


@dataclass(frozen=True, kw_only=True)
class ScreenResult(RunResult):
    """One candidate's screening outcome (metrics at its best validation epoch).

    The shared fields (spec, dataset, best-epoch metrics, curves) are :class:`RunResult`'s.
    ``preferred_lr`` and ``switch_posterior`` are set by Alrao screeners: the Switch posterior
    over the output copies' rates and its weighted geometric mean. ``lr`` is the fixed rate of a
    fixed-rate screener. ``estimate`` (``value``, ``low``, ``high``, ``method``) extrapolates the
    validation curve to the score the run would reach (:mod:`archscreen.core.estimate`), in the
    units of ``val_accuracy`` (classification), ``val_bpc`` (language model) or ``val_mse``.
    """

    SERIAL_ORDER: ClassVar[tuple[str, ...]] = (
        "screener",
        *RUN_FIELDS,
        "preferred_lr",
        "switch_posterior",
        "lr",
        "curves",
    )

    screener: str
    preferred_lr: float | None = None
    switch_posterior: list[dict[str, float]] | None = None
    lr: float | None = None
    estimate: dict[str, Any] | None = None


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; other values pass through."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class Screener(abc.ABC):
    """Train a spec once on a dataset and report its score.

    Contract: deterministic given ``config.seed`` on one device and one thread count (the
    CPU's convolution and recurrent kernels sum in an order that depends on
    ``torch.get_num_threads()``; a 1e-7 difference after the first epoch can grow into a
    different stopping epoch, docs/fidelity.md, study II's caveats); never changes
    the spec or the dataset; raises :class:`~archscreen.core.spec.SpecError`
    before training when the spec does not fit the dataset; returns metrics of
    the best validation epoch; a callback raising ``TrainingCancelled`` ends
    the run with ``stopped_because == "cancelled"`` and partial curves.
    """

    name: str

    @abc.abstractmethod
    def build(self, spec: ArchSpec, data: DatasetSplits) -> tuple[ScreenModel, torch.optim.Optimizer]:
        """Model and optimizer for one run (initialised from the global torch seed)."""

    def extras(self, model: ScreenModel) -> dict[str, Any]:
        return {}

    def epoch_hook(self, model: ScreenModel, optimizer: torch.optim.Optimizer) -> Callback | None:
        """The screener's own per-epoch callback for one run, or ``None`` (default: none).

        Called by :meth:`screen` once the run is built (``model`` and ``optimizer`` are the
        run's, on its device). The callback runs after each epoch, before the caller's
        ``callback`` and before that epoch's checkpoint is written, so what it changes in the
        model or the optimizer is in the checkpoint: a run resumed from a later epoch does not
        see it called again for the epochs already done.
        """
        return None

    def screen(
        self,
        spec: SpecLike,
        data: DatasetSplits | str,
        config: TrainConfig,
        *,
        callback: Callback | None = None,
        step_hook: StepHook | None = None,
        checkpoint_path: str | Path | None = None,
    ) -> ScreenResult:
        run = start_run(spec, data, config, self.build)
        hook = self.epoch_hook(run.model, run.optimizer)
        result = run.train(
            callback=_then(hook, callback), step_hook=step_hook, checkpoint_path=checkpoint_path
        )
        fields = run.result_fields(result)
        est = estimate_for_curves(fields["curves"], fields["task"], max_epochs=config.max_epochs)
        return ScreenResult(
            screener=self.name + stop_rule_suffix(config),
            **fields,
            **self.extras(run.model),
            estimate=est.to_dict() if est is not None else None,
        )


def stop_rule_suffix(config: TrainConfig) -> str:
    """What a result's screener name adds for the budget's stop rule: nothing under raw patience
    (the default), ``+plateau`` under the curve-aware rule with its measured parts, and each part
    that differs from them, ``+plateau(ema=0.5,min_steps=0)``."""
    if config.stop_rule == "patience":
        return ""
    parts = [
        f"{name.removeprefix('plateau_')}={getattr(config, name):g}"
        for name in ("plateau_ema", "plateau_tol", "plateau_min_steps", "plateau_min_epochs")
        if getattr(config, name) != getattr(SCREENING, name)
    ]
    return f"+{config.stop_rule}" + (f"({','.join(parts)})" if parts else "")


def _g(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _then(first: Callback | None, second: Callback | None) -> Callback | None:
    """One callback running ``first`` then ``second`` (either may be None); what ``second``
    raises (``TrainingCancelled`` included) propagates to the loop."""
    if first is None or second is None:
        return first if second is None else second

    def both(progress: Progress) -> None:
        first(progress)
        second(progress)

    return both


def _in_features(spec: ArchSpec, data: DatasetSplits) -> int:
    return feature_shape(spec, data.info)[-1]


# (lr_min, lr_max, num_copies) by base optimizer and task; see AlraoScreener.
DEFAULT_ALRAO_SETTINGS: dict[tuple[str, str], tuple[float, float, int]] = {
    ("sgd", "classification"): (1e-5, 10.0, 10),  # paper, CIFAR-10
    ("sgd", "language_model"): (1e-3, 100.0, 6),  # paper, PTB char-LSTM
    ("sgd", "regression"): (1e-5, 1.0, 10),  # deviation, see the class docstring
    ("adam", "classification"): (1e-4, 0.1, 10),  # fidelity study, docs/fidelity.md
    ("adam", "language_model"): (1e-4, 0.1, 6),  # fidelity study, docs/fidelity.md
    ("adam", "regression"): (1e-5, 0.1, 10),
}


@dataclass
class AlraoScreener(Screener):
    r"""Alrao: random per-feature rates in the body, Switch-averaged output copies.

    Args:
        lr_min, lr_max: the rate range; ``None`` takes the default for the base
            optimizer and the dataset's task (``DEFAULT_ALRAO_SETTINGS``): SGD
            uses the paper's (1e-5, 10) for classification and (1e-3, 100) for
            character-level language models.
        num_copies: output-layer copies; ``None``: 10 (paper, CIFAR-10), or 6
            for language models (paper, PTB).
        base: ``adam`` (default; a deviation, see below) or ``sgd`` (the
            paper's default; the paper found Alrao-Adam less reliable).
        switch_theta: Switch rate θ (paper 0.999; the authors' code 0.9999).
        head_impl: ``fast`` (one fused matmul, custom backward) or ``reference``.

    .. note::
        Deviation: for Gaussian regression with SGD the default ``lr_max`` is 1,
        not 10. The paper has no regression benchmark; the Gaussian NLL's
        gradient grows with 1/σ², and with rates up to 10 the body itself
        diverged within ten steps on the ``regression`` dataset. Pass
        ``lr_max=10`` for the paper's range.

    .. note::
        Deviation: the default base optimizer is Adam, with rates in (1e-4, 0.1)
        for classification and language models. The paper's default is
        Alrao-SGD. In our fidelity study (three datasets, 32 architectures,
        ``docs/fidelity.md``) Alrao-Adam with this range ranked architectures
        by their best-rate score (either optimizer's) better than Alrao-SGD,
        than the (1e-5, 0.1) range, and than one Adam run at its default rate;
        Alrao-SGD ranks better only against a plain-SGD truth on MNIST-1D.
        The lowest decade (1e-5 to 1e-4) was dropped because Adam's best rate
        never fell below 1e-4 there and features drawn in it barely train
        within a screening budget. ``base="sgd"`` restores the paper's method
        with its ranges; ``lr_min=1e-5`` the earlier Adam range. Regression
        keeps (1e-5, 0.1): the study has no regression task.

    .. note::
        Switch, off by default (the paper draws the body's rates from the copies' range):
        ``body_lr_min``/``body_lr_max`` give the body's per-feature rates their own range
        (``core.alrao.with_rate_range``) while the copies keep ``(lr_min, lr_max)``, for nets
        that need a high rate on every unit; measured in ``docs/fidelity.md`` (study II).

    .. note::
        Switch, off by default (the paper draws the body's rates once, at initialisation, and
        keeps them): ``recentre_after=k`` re-centres the body's rate distribution on the Switch
        posterior after a warm-up of ``k`` epochs. After epoch ``k`` (its validation, before its
        checkpoint) the per-feature rates of every body group are drawn anew, log-uniformly in
        :math:`(p\cdot 10^{-w/2},\ p\cdot 10^{w/2})`, where :math:`p` is the posterior's
        preferred rate :math:`\exp\sum_j a_j\log\eta_j` over the output copies
        (``core.alrao.preferred_lr``) at that moment and :math:`w` is ``recentre_width``
        decades (default 1). The new rates come from the optimizer's own seeded generator
        (``redraw_rates``), so a run stays deterministic per seed. The output copies keep
        their fixed log-spaced rates, and the weights, step counts and moments are not
        touched (Alrao's moments are computed at rate 1 and do not depend on the rate).
        It happens once: a run resumed from a checkpoint after epoch ``k`` already holds the
        new rates in its optimizer state and does not draw again. If the posterior is not
        finite at epoch ``k`` (a diverged run, which stops there), nothing is redrawn.
        ``recentre_after=None`` (the default) is the paper's behaviour. Measured in
        ``docs/fidelity.md`` (study II, chosen on its selection half: ``k=10``, ``w=1``): the
        deep sigmoid nets reach their best-rate score and the estimate error falls on held-out
        digits and character-level nets, but architectures are ranked worse; hence off.
    """

    lr_min: float | None = None
    lr_max: float | None = None
    num_copies: int | None = None
    base: Literal["sgd", "adam"] = SCREENING.base
    switch_theta: float = SCREENING.switch_theta
    head_impl: Literal["fast", "reference"] = "fast"
    body_lr_min: float | None = None
    body_lr_max: float | None = None
    recentre_after: int | None = None
    recentre_width: float = SCREENING.recentre_width

    def __post_init__(self) -> None:
        k = self.recentre_after
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValueError(
                f"recentre_after must be None (off) or an int >= 1 (epochs of warm-up), got {k!r}"
            )
        w = self.recentre_width
        if isinstance(w, bool) or not isinstance(w, int | float) or not 0 < w < math.inf:
            raise ValueError(f"recentre_width must be a finite number of decades > 0, got {w!r}")

    @property
    def name(self) -> str:  # type: ignore[override]
        """``alrao-<base>``, then each switch that is on: ``+theta<θ>`` (a Switch rate other than
        the paper's), ``+body[<min>..<max>]`` (an end left to the copies' range is empty),
        ``+recentre@<k>w<w>``. A plain run keeps ``alrao-<base>``, so
        results stored before the switches existed compare with it."""
        name = f"alrao-{self.base}"
        if self.switch_theta != SCREENING.switch_theta:
            name += f"+theta{self.switch_theta:g}"
        if self.body_lr_min is not None or self.body_lr_max is not None:
            name += f"+body[{_g(self.body_lr_min)}..{_g(self.body_lr_max)}]"
        if self.recentre_after is not None:
            name += f"+recentre@{self.recentre_after}w{self.recentre_width:g}"
        return name

    def settings(self, task: str) -> tuple[float, float, int]:
        """(lr_min, lr_max, num_copies) for a task, explicit values winning over defaults."""
        lo, hi, n = DEFAULT_ALRAO_SETTINGS[(self.base, task)]
        lo = self.lr_min if self.lr_min is not None else lo
        hi = self.lr_max if self.lr_max is not None else hi
        if not lo < hi:
            raise ValueError(f"lr_min {lo:g} must be below lr_max {hi:g}")
        return lo, hi, self.num_copies if self.num_copies is not None else n

    def build(self, spec: ArchSpec, data: DatasetSplits) -> tuple[ScreenModel, torch.optim.Optimizer]:
        info = data.info
        lr_min, lr_max, copies = self.settings(info.task)
        body = build_body(spec, info)
        head = AlraoHead(
            _in_features(spec, data),
            head_out_features(info),
            copies,
            lr_min,
            lr_max,
            task="regression" if info.task == "regression" else "classification",
            theta=self.switch_theta,
            impl=self.head_impl,
        )
        model = ScreenModel(body, head, info.task)
        body_groups = alrao_param_groups(body)
        if self.body_lr_min is not None or self.body_lr_max is not None:
            body_groups = with_rate_range(body_groups, self.body_lr_min or lr_min, self.body_lr_max or lr_max)
        groups = [*body_groups, head.param_group()]
        # The rates' generator is seeded from the run's seed (set by Screener.screen).
        seed = int(torch.initial_seed()) % (2**31)
        opt_cls = AlraoAdam if self.base == "adam" else AlraoSGD
        optimizer = opt_cls(groups, lr_min, lr_max, seed=seed)
        return model, optimizer

    def epoch_hook(self, model: ScreenModel, optimizer: torch.optim.Optimizer) -> Callback | None:
        """With ``recentre_after=k``: after epoch ``k``, redraw the body's rates around the
        posterior's preferred rate (see the class docstring). ``None`` when the switch is off."""
        if self.recentre_after is None:
            return None
        head = model.head
        assert isinstance(head, AlraoHead) and isinstance(optimizer, AlraoAdam | AlraoSGD)
        after, half = self.recentre_after, self.recentre_width / 2

        def recentre(progress: Progress) -> None:
            if progress.epoch != after:
                return
            centre = _preferred_lr(head)
            if math.isfinite(centre) and centre > 0:
                optimizer.redraw_rates(centre * 10.0**-half, centre * 10.0**half)

        return recentre

    def extras(self, model: ScreenModel) -> dict[str, Any]:
        head = model.head
        assert isinstance(head, AlraoHead)
        return {"preferred_lr": _preferred_lr(head), "switch_posterior": _posterior_table(head)}


# What a run's seed and device are is the caller's (a job's seed, the worker's device), not an option.
# pause_at: an ASHA rung the service sets per job (worker/runner.py), no screening option.
_RUN_ONLY = frozenset({"seed", "device", "pause_at"})


def screening_run(
    options: Mapping[str, Any], *, seed: int = 0, device: str = "cpu"
) -> tuple[AlraoScreener, TrainConfig]:
    """The one way from a study's screening options to a run: the screener and its budget.

    Each option goes, by its name, to the :class:`AlraoScreener` field or the :class:`TrainConfig`
    field of that name, so a new option is its field in :class:`archscreen.config.ScreeningConfig`
    plus the core code that reads it, and nothing else. An option left out takes core's default
    (:data:`~archscreen.core.defaults.SCREENING`, which ``ScreeningConfig``'s defaults are too).
    Used by the worker, ``archscreen screen``, and the benches; the CI gate, ``submit`` and
    ``up --demo`` send the same options to the service, whose worker calls this.

    Raises:
        ValueError: an option neither class has (the names are listed), or a value either class
            refuses.
    """
    screener_names = {f.name for f in fields(AlraoScreener)}
    train_names = {f.name for f in fields(TrainConfig)} - _RUN_ONLY
    unknown = set(options) - screener_names - train_names
    if unknown:
        raise ValueError(
            f"unknown screening option(s) {sorted(unknown)}; known: {sorted(screener_names | train_names)}"
        )
    screener = AlraoScreener(**{k: v for k, v in options.items() if k in screener_names})
    budget = {k: v for k, v in options.items() if k in train_names}
    config = TrainConfig(**budget, seed=seed, device=device)
    return screener, config


@dataclass
class FixedRateScreener(Screener):
    """Plain ``torch.optim.SGD`` or ``Adam`` at one rate (baselines, LR grids)."""

    lr: float = 0.1
    optimizer: Literal["sgd", "adam"] = "sgd"

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"Invalid learning rate: {self.lr}")

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"{self.optimizer}@{self.lr:g}"

    def build(self, spec: ArchSpec, data: DatasetSplits) -> tuple[ScreenModel, torch.optim.Optimizer]:
        model = plain_model(spec, data)
        optimizer: torch.optim.Optimizer
        if self.optimizer == "adam":
            optimizer = torch.optim.Adam(model.parameters(), lr=self.lr)
        else:
            optimizer = torch.optim.SGD(model.parameters(), lr=self.lr)
        return model, optimizer

    def extras(self, model: ScreenModel) -> dict[str, Any]:
        return {"lr": self.lr}


@dataclass(frozen=True)
class GridResult:
    """A fixed-rate grid: every (rate, seed) run and the best rate by mean score."""

    runs: list[ScreenResult]
    best_lr: float
    best_mean_val_loss: float
    metric: str = "val_loss"
    seconds: float = 0.0

    def by_lr(self) -> dict[float, list[ScreenResult]]:
        out: dict[float, list[ScreenResult]] = {}
        for r in self.runs:
            assert r.lr is not None
            out.setdefault(r.lr, []).append(r)
        return out


def grid(
    spec: ArchSpec | str | Path | dict[str, Any],
    dataset: DatasetSplits | str,
    lrs: list[float],
    seeds: int,
    config: TrainConfig,
    optimizer: Literal["sgd", "adam"] = "sgd",
    callback: Any = None,
) -> GridResult:
    """Train at each rate for ``seeds`` seeds; the best rate has the lowest mean val loss.

    Runs without any finite validation loss count as +inf.
    """
    t0 = time.perf_counter()
    arch = spec if isinstance(spec, ArchSpec) else parse_spec(spec)
    runs: list[ScreenResult] = []
    for lr in lrs:
        for s in range(seeds):
            cfg = TrainConfig(**{**asdict(config), "seed": config.seed + s})
            res = FixedRateScreener(lr=lr, optimizer=optimizer).screen(arch, dataset, cfg)
            runs.append(res)
            if callback is not None:
                callback(res)
    means: dict[float, float] = {}
    for r in runs:
        assert r.lr is not None
        # A run that diverged after some good epochs keeps its best epoch, as
        # early stopping would; one that never had a finite loss counts as +inf.
        v = r.val_loss if math.isfinite(r.val_loss) else math.inf
        means.setdefault(r.lr, 0.0)
        means[r.lr] += v / seeds
    best_lr = min(means, key=lambda k: means[k])
    return GridResult(
        runs=runs, best_lr=best_lr, best_mean_val_loss=means[best_lr], seconds=time.perf_counter() - t0
    )

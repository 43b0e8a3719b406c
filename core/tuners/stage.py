r"""The tuning stage's cheaper options (issue 29, item 6): where and how many tuning runs start.

The multi-start (``start="multi"``, issue 16; the default until this measurement) trains one
finite-difference run from each quartile of the Switch posterior (median, 25th, 75th percentile:
:func:`~.start.posterior_starts`) and keeps the best by validation. On the end-to-end pipeline
bench that was 57 % of the pipeline's CPU. The options here spend less, each a switch
(:class:`archscreen.core.defaults.TuningDefaults`, read by the study's ``PromotionPolicy`` and
``bench/tuning_stage.py``):

* ``start="screen-weights"``: **one** run that starts from the screening run's own weights, not
  from a fresh initialisation: the Alrao model's body (its best epoch, the weights the loop keeps)
  and the output copy the Switch posterior weights most, copied into the plain model's single
  output layer (:func:`plain_state_from_alrao`); the rate is the posterior's weighted geometric
  mean (:func:`~.start.initial_lr_from_screen`, the single start's rate). With several screening
  seeds the service starts from the run with the lowest validation loss (``worker/promotion.py``).

  .. note::
      Deviation (there is no paper for this step): the chosen copy, not the Switch-averaged
      head. The average of the copies is a mixture of K-way softmaxes, which no single linear
      layer equals; the most-weighted copy is exactly representable (the plain model's outputs
      equal that copy's to float64 rounding, :func:`plain_state_from_alrao`'s test), and it is the
      copy whose rate the posterior prefers. The body's weights were trained with per-feature random rates;
      the tuner's one rate takes over from there, with fresh optimizer moments.

* ``start="posterior-width"``: the number of quartile starts follows the posterior's width
  (:func:`starts_for_width`). The rule, written before measuring: the width is the posterior's
  interquartile range in decades, :math:`w = \log_{10}(q_{75}/q_{25})`
  (:func:`~.start.posterior_quantile`); the starts are
  :math:`\min(n_{\max}, \max(1, \lceil w / (1/3) \rceil))`: one start when the middle half of the
  posterior's mass lies within a third of a decade (one copy's spacing on the default Adam range,
  10 copies over 3 decades), two within two thirds, else today's count. The starts are the first
  ones of the promotion's order (median, lower quartile, upper quartile).

* ``halving=True``: the starts are spent through the rung scheduler
  (:class:`archscreen.core.asha.AshaScheduler`, successive halving): every start trains to the
  first rung, only the best ``1/η`` (by the lowest validation loss so far, the weights the loop
  keeps) continue from their checkpoints, up to the full budget. With ``n`` starts and
  ``k = ⌈log_η n⌉`` halvings the first rung is :math:`\max(1, \lfloor R/\eta^k \rfloor)` epochs
  (:func:`halving_min_epochs`): 3 starts with η = 3 train ``R/3`` epochs each, then one of them
  trains on to ``R``, about 1.7 runs' compute in place of 3. A start that stopped early on its own
  (patience, divergence) reports its final value at its rung. Combines with either start rule.

The winner of the measurement (``bench/tuning_stage.py``, ``docs/benchmarks.md`` "Tuning stage")
is the default in :data:`archscreen.core.defaults.TUNING`; every option stays reachable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from archscreen.core.asha import AshaScheduler, rung_value
from archscreen.core.data import DatasetSplits
from archscreen.core.defaults import TUNING
from archscreen.core.runs import SpecLike
from archscreen.core.training.loop import Callback, StepHook, TrainConfig

from .start import _checked, _posterior_and_preferred, posterior_quantile
from .tuner import Tuner, TuningResult

__all__ = [
    "HalvingResult",
    "chosen_copy",
    "halving_min_epochs",
    "plain_state_from_alrao",
    "posterior_width_decades",
    "screening_weights",
    "starts_for_width",
    "tune_with_halving",
]


def posterior_width_decades(result_or_posterior: Any) -> float:
    """The posterior's interquartile range in decades, :math:`\\log_{10}(q_{75}/q_{25})`."""
    q25 = posterior_quantile(result_or_posterior, 0.25)
    q75 = posterior_quantile(result_or_posterior, 0.75)
    return math.log10(q75 / q25)


def starts_for_width(
    result_or_posterior: Any, max_starts: int = 3, narrow_decades: float = TUNING.narrow_decades
) -> int:
    """How many quartile starts the posterior's width asks for (module docstring's rule):
    ``min(max_starts, max(1, ceil(width / narrow_decades)))``: a width within
    ``narrow_decades`` (inclusive) is one start. A result with no posterior (only a
    ``preferred_lr``) gets one start."""
    if max_starts < 1:
        raise ValueError(f"max_starts must be >= 1, got {max_starts}")
    if not narrow_decades > 0:
        raise ValueError(f"narrow_decades must be > 0, got {narrow_decades}")
    posterior, _ = _posterior_and_preferred(result_or_posterior)
    if not posterior:
        return 1
    width = posterior_width_decades(posterior)
    return min(max_starts, max(1, math.ceil(width / narrow_decades - 1e-9)))


def chosen_copy(result_or_posterior: Any) -> int:
    """The index of the output copy the Switch posterior weights most (the first on a tie); the
    posterior lists the copies in the head's order (``posterior_table``)."""
    posterior, _ = _posterior_and_preferred(result_or_posterior)
    if not posterior:
        raise ValueError("no Switch posterior in the screening result (was it screened with Alrao?)")
    _, ws = _checked(posterior)
    return max(range(len(ws)), key=lambda j: (ws[j], -j))


def plain_state_from_alrao(alrao_state: Mapping[str, Tensor], copy: int) -> dict[str, Tensor]:
    """The plain model's state dict (``build_plain_model``) from an Alrao model's: the body's
    tensors as they are, and output copy ``copy``'s weight and bias as the single output layer's.
    The Switch's buffers and the other copies are dropped."""
    weight, bias = alrao_state.get("head.weight"), alrao_state.get("head.bias")
    if weight is None or bias is None:
        raise ValueError("not an Alrao model's state dict: no head.weight/head.bias (copies)")
    if not 0 <= copy < weight.shape[0]:
        raise ValueError(f"copy {copy} is out of range: the head has {weight.shape[0]} copies")
    out = {k: v.detach().clone() for k, v in alrao_state.items() if not k.startswith("head.")}
    out["head.linear.weight"] = weight[copy].detach().clone()
    out["head.linear.bias"] = bias[copy].detach().clone()
    return out


def screening_weights(checkpoint_path: str | Path) -> dict[str, Tensor]:
    """The weights a screening run handed over, from its checkpoint: the best epoch's
    (``best_state``, what the loop restores at the end), else the last epoch's."""
    saved = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    state = saved.get("best_state") or saved.get("model")
    if state is None:
        raise ValueError(f"{checkpoint_path}: no model weights in this checkpoint")
    return dict(state)


def halving_min_epochs(max_epochs: int, starts: int, eta: int = TUNING.halving_eta) -> int:
    """The first rung for ``starts`` starts: ``max(1, R // eta**k)`` with ``k = ceil(log_eta n)``
    halvings (``R`` itself for one start)."""
    if starts < 1 or eta < 2 or max_epochs < 1:
        raise ValueError(f"need starts >= 1, eta >= 2, max_epochs >= 1 (got {starts}, {eta}, {max_epochs})")
    k, n = 0, 1
    while n < starts:
        k, n = k + 1, n * eta
    return max(1, max_epochs // eta**k)


@dataclass(frozen=True)
class HalvingResult:
    """The starts spent through the rung scheduler: ``best`` is the run that completed the top rung
    (the stage's answer), start number ``chosen``; ``runs`` every start's last result, in start
    order; ``rungs`` the rung epochs; ``values`` each start's validation loss per rung it reached."""

    best: TuningResult
    chosen: int
    runs: list[TuningResult]
    rungs: list[int]
    values: list[list[float | None]]


def tune_with_halving(
    tuner: Tuner,
    spec: SpecLike,
    dataset: DatasetSplits | str,
    rates: Sequence[float],
    budget: TrainConfig,
    workdir: str | Path,
    *,
    eta: int = TUNING.halving_eta,
    init_state: Mapping[str, Tensor] | None = None,
    callback: Callable[[int], Callback | None] | None = None,
    step_hook: StepHook | None = None,
) -> HalvingResult:
    """Successive halving over tuning starts, one process: start ``i`` is ``tuner`` from
    ``rates[i]`` (same seed and ``init_state`` for all), checkpointed to ``workdir/start-<i>.pt``
    and continued from there when promoted (``train`` resumes a run whose epoch cap was raised).
    The scheduler's state is the checkpoints: run again after a kill, each start resumes and
    the decisions replay. ``callback(i)`` gives start ``i``'s epoch callback. A cancelled start
    ends the stage at once: ``best`` is then that start's result (``stopped_because ==
    "cancelled"``)."""
    if not rates:
        raise ValueError("no starting rates")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    asha = AshaScheduler(
        budget.max_epochs,
        min_epochs=halving_min_epochs(budget.max_epochs, len(rates), eta),
        reduction_factor=eta,
    )
    ids = [str(i) for i in range(len(rates))]
    asha.add_runs(ids)
    asha.close()
    last: dict[int, TuningResult] = {}
    while (job := asha.get_job()) is not None:
        i = int(job.run_id)
        res = tuner.tune(
            spec,
            dataset,
            rates[i],
            replace(budget, max_epochs=job.epochs),
            None,
            callback(i) if callback is not None else None,
            step_hook=step_hook,
            checkpoint_path=work / f"start-{i}.pt",
            init_state=init_state,
        )
        last[i] = res
        if res.stopped_because == "cancelled":  # the caller sees it on ``best``
            return HalvingResult(
                best=res,
                chosen=i,
                runs=[last[k] for k in sorted(last)],
                rungs=list(asha.rungs),
                values=[asha.values(r) for r in ids],
            )
        # the lowest validation loss within the rung's epochs, read off the curve: a run resumed
        # past its rung (a replay after a kill) reports what it had at the rung, so the decisions
        # and the values replay exactly
        value = rung_value(res.curves, job.epochs, res.task, key="val-loss")
        asha.report(job.run_id, value if math.isfinite(value) else None)
    leader = int(asha.ranking()[0])
    return HalvingResult(
        best=last[leader],
        chosen=leader,
        runs=[last[i] for i in sorted(last)],
        rungs=list(asha.rungs),
        values=[asha.values(r) for r in ids],
    )

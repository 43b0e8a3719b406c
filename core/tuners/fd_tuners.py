"""The finite-difference tuners (Ravaut & Gorti, 2018): ``fd2`` (Newton on the rate) and ``fd1``.

The optimizers are :class:`~archscreen.core.tuners.fd.FD2SGD` and
:class:`~archscreen.core.tuners.fd.FD1SGD`; this module is the glue that runs them in the
training loop: the five trial losses built per step (:mod:`.functional`), the recorded rate,
and the switches that differ from the paper (all off with ``paper_exact=True``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from archscreen.core.data import DatasetSplits
from archscreen.core.training.loop import TrainConfig

from .fd import FD1SGD, FD2SGD, FD2Adam
from .functional import batched_functional_loss, functional_loss, vmappable
from .page_hinkley import PageHinkley
from .tuner import Tuner

__all__ = ["FD1Tuner", "FD2AdamTuner", "FD2Tuner"]


class FD2Tuner(Tuner):
    """Second-order finite-difference tuner (``fd2``): :class:`~archscreen.core.tuners.FD2SGD`.

    Default configuration (each item a documented switch; ``paper_exact=True`` gives the paper's
    ε = 1e-5, δ = 1e-6, update every step, the five losses on the full training batch in the
    parameters' dtype, no guards, and the converged rate as the recommendation):

    * ``relative_eps=True, eps=0.1``: finite-difference step 0.1·η, large enough that the second
      difference is above δ, so the update is a Newton step;
    * ``eval_dtype=torch.float64``: the five losses in float64. In float32 the second difference
      of a loss near 2 at η ≈ 0.01 (4ε²η²·f'' ≈ 1e-8) is below float32's resolution, so early
      Newton steps follow rounding noise;
    * ``curvature_guard=True``: no update when f'' ≤ 0; ``max_change=1.1``: at most ×/÷1.1 per
      update, so η climbs towards the Newton target over a few hundred steps while the network
      trains (with ×/÷2, η reached the batch's one-step optimum within ~40 steps and broke the MLP
      and LeNet-5 runs; ``bench/tuner_quality.py``); ``finite_guard=True``: a non-finite trial
      loss halves η;
    * ``recommend="best"``: the recommended rate is the mean rate over the steps up to the end of
      the best validation epoch (the rates that produced the reported weights). The converged rate
      (``"tail"``, the paper's reading) is the training batch's greedy one-step optimum, which
      overshoots the best constant rate; the mean over the whole run (``"mean"``) still counts the
      rates that made the run worse after its best epoch. With the slow climb the run works like a
      learning-rate range test, so this rule depends on starting *below* the good range;
      ``bench/tuner_quality.py --init-lr`` measures how much;
    * ``every=4``: η updated every 4 steps, ``eval_samples=64``: the five losses on 64 samples of
      the batch -- the overhead choice measured in ``bench/tuner_overhead.py`` and checked for
      accuracy in ``bench/tuner_quality.py``;
    * ``eval_batch="train"`` (the paper's main method); ``"validation"`` evaluates f on a batch of
      the validation split (paper §5.3).

    Switches off by default (measured, see ``docs/tuners.md``): ``momentum`` on η (paper §5.2),
    ``average`` (Newton on exponentially averaged f', f''), ``guard=True`` (FD2 inside the
    Page-Hinkley guard of SALERA, rate divided by ``guard_factor`` on a trigger).
    """

    name = "fd2"

    def __init__(
        self,
        paper_exact: bool = False,
        *,
        eps: float | None = None,
        delta: float = 1e-6,
        relative_eps: bool | None = None,
        eval_dtype: torch.dtype | None = None,
        curvature_guard: bool | None = None,
        max_change: float | None = 1.1,
        finite_guard: bool | None = None,
        momentum: float = 0.0,
        average: float = 0.0,
        every: int | None = None,
        eval_batch: Literal["train", "validation"] = "train",
        eval_samples: int | None = 64,
        evaluation: Literal["auto", "sequential", "batched"] = "auto",
        recommend: Literal["tail", "mean", "best"] | None = None,
        guard: bool = False,
        guard_factor: float = 2.0,
    ) -> None:
        super().__init__(paper_exact)
        if recommend not in (None, "tail", "mean", "best"):
            raise ValueError(f"Invalid recommend: {recommend!r} (tail, mean or best)")
        if eval_batch not in ("train", "validation"):
            raise ValueError(f"Invalid eval_batch: {eval_batch!r} (train or validation)")
        if eval_samples is not None and eval_samples < 1:
            raise ValueError(f"Invalid eval_samples: {eval_samples}")
        guards = not paper_exact
        self.relative_eps = guards if relative_eps is None else relative_eps
        self.eps = eps if eps is not None else (0.1 if self.relative_eps else 1e-5)
        self.delta = delta
        self.eval_dtype = None if paper_exact else (torch.float64 if eval_dtype is None else eval_dtype)
        self.curvature_guard = guards if curvature_guard is None else curvature_guard
        self.max_change = max_change if guards else None
        self.finite_guard = guards if finite_guard is None else finite_guard
        self.momentum = momentum
        self.average = average
        self.every = (4 if guards else 1) if every is None else every
        self.eval_batch = eval_batch
        self.eval_samples = eval_samples if guards else None
        self.evaluation = evaluation
        self.recommend = ("tail" if paper_exact else "best") if recommend is None else recommend
        self.guard = guard
        self.guard_factor = guard_factor

    optimizer_cls: type[FD2SGD] = FD2SGD

    def build_optimizer(self, model: nn.Module, init_lr: float) -> Optimizer:
        inner = self.optimizer_cls(
            model.parameters(),
            lr=init_lr,
            eps=self.eps,
            delta=self.delta,
            momentum=self.momentum,
            average=self.average,
            every=self.every,
            relative_eps=self.relative_eps,
            eval_dtype=self.eval_dtype,
            curvature_guard=self.curvature_guard,
            max_change=self.max_change,
            finite_guard=self.finite_guard,
            evaluation=self.evaluation,
        )
        if not self.guard:
            return inner
        return PageHinkley(inner, factor=self.guard_factor)

    def events(self, optimizer: Optimizer) -> dict[str, int]:
        inner = optimizer.optimizer if isinstance(optimizer, PageHinkley) else optimizer
        out = {"rate_updates": int(cast(dict[Any, Any], inner.state)["fd"]["updates"])}
        if isinstance(optimizer, PageHinkley):
            out["page_hinkley_triggers"] = optimizer.triggers
        return out

    def make_step(self, optimizer: Optimizer, data: DatasetSplits, config: TrainConfig) -> Callable[..., Any]:
        ph = optimizer if isinstance(optimizer, PageHinkley) else None
        fd2 = optimizer.optimizer if isinstance(optimizer, PageHinkley) else optimizer
        assert isinstance(fd2, FD2SGD)
        self.trajectory(optimizer)
        device = torch.device(config.device)
        x_val = data.x_val.to(device) if self.eval_batch == "validation" else None
        y_val = data.y_val.to(device) if self.eval_batch == "validation" else None
        n_eval = self.eval_samples or config.batch_size
        if x_val is not None:
            order = torch.randperm(len(x_val), generator=torch.Generator().manual_seed(config.seed)).to(
                device
            )
        has_bn = False
        batched_ok = self.evaluation != "sequential"

        def step(model: nn.Module, opt: Optimizer, xb: Tensor, yb: Tensor) -> Any:
            nonlocal has_bn
            opt.zero_grad(set_to_none=True)
            out = model(xb, yb)
            out.loss.backward()
            fd = cast(dict[Any, Any], fd2.state)["fd"]
            kwargs: dict[str, Any] = {}
            if fd["step"] % fd2.every == 0:
                if x_val is not None and y_val is not None:
                    k = fd["updates"]
                    n = min(n_eval, len(x_val))
                    start = (k * n) % len(x_val)
                    # wraps around the split: a slice cut at its end could hold one sample, which
                    # batch norm refuses in training mode (a 385-row validation split did)
                    idx = order[(start + torch.arange(n, device=device)) % len(x_val)]
                    ex, ey = x_val.index_select(0, idx), y_val.index_select(0, idx)
                else:
                    ex, ey = xb[:n_eval], yb[:n_eval]
                kwargs["loss_at"] = functional_loss(model, ex, ey)
                # vmap cannot batch cuDNN's fused RNN kernels (they need real weight storage),
                # so recurrent models and models with buffers are evaluated sequentially.
                if batched_ok and device.type != "cpu" and vmappable(model):
                    kwargs["loss_at_batched"] = batched_functional_loss(model, ex, ey)
            if ph is not None:
                ph.step(loss=out.loss, **kwargs)
            else:
                optimizer.step(**kwargs)
            self.trajectory(optimizer).record(fd2.lr)
            return out

        return step


class FD2AdamTuner(FD2Tuner):
    """Second-order finite-difference tuner on Adam's direction (``fd2-adam``): :class:`FD2Adam`.

    f(η) = L(w − η·u), u = m̂/(√v̂ + ε) Adam's bias-corrected update direction; the five losses,
    the Newton step on η, the guards and every switch are :class:`FD2Tuner`'s, and
    ``paper_exact=True`` means the same. Its recommended rate is a ``torch.optim.Adam`` rate
    (``base_optimizer == "adam"``), started by default at Adam's 1e-3 and, after an Alrao-Adam
    screening, from the Switch posterior (:func:`archscreen.core.tuners.start.initial_lr_from_screen`,
    or several starts by :func:`archscreen.core.tuners.start.posterior_starts`). The promotion
    default after Alrao-Adam (:func:`archscreen.core.names.default_tuner_for`).

    One default differs from fd2's, measured (``bench/tuner_quality.py --adam``, ``docs/tuners.md``):

    * ``eval_batch="validation"`` (the paper's §5.3 variant; fd2 keeps ``"train"``): the five
      losses on 64 samples of the validation split, cycled. On the training batch the Newton
      target along Adam's direction is that batch's greedy one-step optimum, 10–25× above the
      best constant Adam rate (0.26 against 0.01 on MobileNet), and the climb towards it broke
      the tuning runs (worst gap 87 pp retrained, best-of-3); on held-out samples the target has
      no minibatch-noise inflation, and a start from the posterior is already in range, so the
      held-out target's downward bias costs little (worst gap 2.2 pp). ``eval_batch="train"``
      restores fd2's choice.
    """

    name = "fd2-adam"
    base_optimizer = "adam"
    optimizer_cls = FD2Adam

    def __init__(
        self,
        paper_exact: bool = False,
        *,
        eval_batch: Literal["train", "validation"] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            paper_exact, eval_batch=eval_batch or ("train" if paper_exact else "validation"), **kwargs
        )

    def default_init_lr(self) -> float:
        return 1e-3


class FD1Tuner(Tuner):
    """First-order finite-difference tuner (``fd1``): :class:`~archscreen.core.tuners.FD1SGD`.

    Guards (off with ``paper_exact``): ``max_change=2`` (×/÷2 per step at most) and
    ``finite_guard`` (skip a non-finite hypergradient). ``meta_lr`` α defaults to 1e-3.
    """

    name = "fd1"

    def __init__(
        self, paper_exact: bool = False, *, meta_lr: float = 1e-3, max_change: float | None = 2.0
    ) -> None:
        super().__init__(paper_exact)
        self.meta_lr = meta_lr
        self.max_change = None if paper_exact else max_change

    def build_optimizer(self, model: nn.Module, init_lr: float) -> Optimizer:
        return FD1SGD(
            model.parameters(),
            lr=init_lr,
            meta_lr=self.meta_lr,
            max_change=self.max_change,
            finite_guard=not self.paper_exact,
        )

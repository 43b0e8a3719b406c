"""Learning-rate tuning: train a candidate with an online rate tuner, report the converged rate.

After Alrao screening ranks the architectures, each promoted candidate is trained once with
an adaptive rate started from the Alrao posterior (:func:`initial_lr_from_screen`); the rate
the tuner settles on is the recommended learning rate, reported with its trajectory.

Tuners (registry :data:`TUNERS`, all passing ``tests/core/test_tuning.py``'s contract suite):

* ``fd2`` -- :class:`FD2Tuner`: Newton on the rate by finite differences (Ravaut & Gorti);
* ``fd1`` -- :class:`FD1Tuner`: gradient descent on the rate (same paper, first order);
* ``salera`` -- :class:`SALERATuner`: layer-wise ALERA + Page-Hinkley guard;
* ``spalera`` -- :class:`SALERATuner` (parameter-wise);
* ``ag-adam`` -- :class:`AgAdamTuner`: Adam with the agnostic rate control.

Every tuner's deliberate departures from its paper are switches; ``paper_exact=True`` turns
all of them off. The optimizers live in :mod:`archscreen.core.tuners`; the rates are
``param_groups``/state entries changed between steps, so a run resumes from the training
loop's checkpoint exactly (the thinned trajectory is optimizer state too).
"""

from __future__ import annotations

import abc
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from archscreen.core.data import DatasetSplits, load_dataset
from archscreen.core.names import TUNER_NAMES, TunerName
from archscreen.core.spec import ArchSpec, build_body, feature_shape, parse_spec, spec_hash, validate_spec
from archscreen.core.training.loop import Callback, Progress, StepHook, TrainConfig, train
from archscreen.core.training.model import PlainHead, ScreenModel, head_out_features
from archscreen.core.tuners import ALERA, FD1SGD, FD2SGD, SPALERA, AgAdam, PageHinkley

__all__ = [
    "TUNERS",
    "AgAdamTuner",
    "FD1Tuner",
    "FD2Tuner",
    "SALERATuner",
    "Tuner",
    "TuningResult",
    "functional_loss",
    "get_tuner",
    "initial_lr_from_screen",
    "tune",
]

TRAJECTORY_KEY = "archscreen.trajectory"


# --------------------------------------------------------------------------------------------
# start from the screening
# --------------------------------------------------------------------------------------------
def screening_optimizer(screener: str) -> str | None:
    """The optimizer whose rates an Alrao screening's posterior is over (``"alrao-adam"`` -> ``"adam"``);
    ``None`` for a screener without a rate posterior."""
    return screener.removeprefix("alrao-") if screener.startswith("alrao-") else None


def posterior_fits_tuner(screening_base: str | None, tuner: Tuner) -> bool:
    """Whether a posterior over ``screening_base``'s rates can start ``tuner``: an Adam rate is no
    SGD rate (their scales differ by orders of magnitude). ``None`` (unknown) is taken to fit."""
    return screening_base is None or screening_base == tuner.base_optimizer


def initial_lr_from_screen(result_or_posterior: Any, lr_range: tuple[float, float] | None = None) -> float:
    """The initial rate for tuning from an Alrao screening result.

    The Switch posterior's weighted geometric mean :math:`\\exp(\\sum_j w_j \\log\\eta_j / \\sum_j w_j)`,
    clipped to ``lr_range`` (default: the range of the copies' rates, i.e. the screening range).

    Accepts a :class:`~archscreen.core.screening.ScreenResult`, its ``to_dict()`` / the JSON of
    ``archscreen screen --json``, or the posterior itself (a list of ``{"lr", "weight"}``). A
    result without a posterior but with ``preferred_lr`` uses that rate.
    """
    posterior: Any
    preferred: Any = None
    if isinstance(result_or_posterior, Sequence) and not isinstance(result_or_posterior, str | bytes):
        posterior = list(result_or_posterior)
    elif isinstance(result_or_posterior, dict):
        posterior = result_or_posterior.get("switch_posterior")
        preferred = result_or_posterior.get("preferred_lr")
    else:
        posterior = getattr(result_or_posterior, "switch_posterior", None)
        preferred = getattr(result_or_posterior, "preferred_lr", None)
    if not posterior:
        if preferred is not None and float(preferred) > 0 and math.isfinite(float(preferred)):
            lr = float(preferred)
            return min(max(lr, lr_range[0]), lr_range[1]) if lr_range else lr
        raise ValueError("no Switch posterior in the screening result (was it screened with Alrao?)")
    try:
        lrs = [float(e["lr"]) for e in posterior]
        ws = [float(e["weight"]) for e in posterior]
    except (TypeError, KeyError, ValueError):
        raise ValueError("switch_posterior must be a list of {'lr': ..., 'weight': ...}") from None
    if any(not (lr > 0 and math.isfinite(lr)) for lr in lrs):
        raise ValueError("switch_posterior rates must be finite and > 0")
    if any(not (w >= 0 and math.isfinite(w)) for w in ws) or sum(ws) <= 0:
        raise ValueError("switch_posterior weights must be finite, >= 0 and not all zero")
    log_mean = statistics.fmean([math.log(lr) for lr in lrs], weights=ws)
    lo, hi = lr_range if lr_range is not None else (min(lrs), max(lrs))
    if not 0 < lo <= hi:
        raise ValueError(f"invalid lr_range {lr_range}")
    return min(max(math.exp(log_mean), lo), hi)


# --------------------------------------------------------------------------------------------
# functional perturbed losses for fd2
# --------------------------------------------------------------------------------------------
def functional_loss(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[list[Tensor]], Tensor]:
    """``loss_at(params)``: the model's loss on ``(x, y)`` with its parameters replaced.

    Evaluated with :func:`torch.func.functional_call`, so the real weights are never touched.
    ``params`` follow ``model.parameters()`` order and may be float64 (inputs, float targets and
    buffers are cast to match). Every call starts from the same random-number state (common
    dropout masks for the five trial points) and the global RNG is left as it was; buffers
    are cloned, so batch-norm running statistics are not updated.
    """
    names = [n for n, _ in model.named_parameters()]
    buffers = dict(model.named_buffers())
    device = x.device
    devices = [device] if device.type == "cuda" else []
    cpu_state = torch.get_rng_state()
    cuda_state = torch.cuda.get_rng_state(device) if devices else None

    def loss_at(params: list[Tensor]) -> Tensor:
        if len(params) != len(names):
            raise ValueError(f"loss_at got {len(params)} tensors for {len(names)} parameters")
        dt = params[0].dtype
        xx = x.to(dt) if x.is_floating_point() else x
        yy = y.to(dt) if y.is_floating_point() else y
        bufs = {n: (b.to(dt) if b.is_floating_point() else b).clone() for n, b in buffers.items()}
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(cpu_state)
            if cuda_state is not None:
                torch.cuda.set_rng_state(cuda_state, device)
            out = torch.func.functional_call(
                model, {**dict(zip(names, params, strict=True)), **bufs}, (xx, yy)
            )
        return out.loss

    return loss_at


def _vmappable(model: nn.Module) -> bool:
    """Whether ``torch.func.vmap`` can batch the model's forward over stacked weight sets.

    Not with buffers (batch-norm statistics) and not with recurrent layers: cuDNN's fused RNN
    kernels need weights with real storage (``flatten_parameters``), which a vmapped batch lacks.
    """
    has_buffers = any(True for _ in model.buffers())
    return not has_buffers and not any(isinstance(m, nn.RNNBase) for m in model.modules())


def batched_functional_loss(model: nn.Module, x: Tensor, y: Tensor) -> Callable[[list[Tensor]], Tensor]:
    """Like :func:`functional_loss` for stacked weight sets (leading dim), via ``torch.func.vmap``.

    Requires a model without in-place buffer updates in its current mode (no training-mode
    batch norm); dropout uses the same mask for every weight set (``randomness="same"``).
    """
    names = [n for n, _ in model.named_parameters()]
    buffers = dict(model.named_buffers())

    def one(*params: Tensor) -> Tensor:
        dt = params[0].dtype
        xx = x.to(dt) if x.is_floating_point() else x
        yy = y.to(dt) if y.is_floating_point() else y
        bufs = {n: (b.to(dt) if b.is_floating_point() else b) for n, b in buffers.items()}
        out = torch.func.functional_call(model, {**dict(zip(names, params, strict=True)), **bufs}, (xx, yy))
        return out.loss

    batched = torch.func.vmap(one, randomness="same")
    devices = [x.device] if x.device.type == "cuda" else []

    def loss_at_batched(stacked: list[Tensor]) -> Tensor:
        with torch.random.fork_rng(devices=devices):
            return batched(*stacked)

    return loss_at_batched


# --------------------------------------------------------------------------------------------
# results and the trajectory
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TuningResult:
    """One tuning run: recommended rate, its trajectory, curves and best-epoch metrics.

    ``trajectory`` is ``[[step, lr], ...]`` (the rate in effect after ``step`` steps; step 0 is
    ``init_lr``) thinned to at most ``max_points`` (strides double as
    the run grows); ``recommended_lr`` is read off the run by the rule ``recommended_by``
    (``Tuner.recommend``: ``"tail"``, the geometric mean over the last quarter of the steps, the
    "converged" rate; ``"mean"``; ``"best"``, the mean up to the best epoch). ``events`` counts
    guard activity (Page-Hinkley triggers, fd2 guard hits).
    """

    tuner: str
    spec_name: str
    spec_hash: str
    dataset: str
    task: str
    seed: int
    init_lr: float
    recommended_lr: float
    final_lr: float
    trajectory: list[list[float]]
    val_loss: float
    val_accuracy: float | None
    test_loss: float
    test_accuracy: float | None
    val_bpc: float | None
    test_bpc: float | None
    val_mse: float | None
    test_mse: float | None
    epochs: int
    best_epoch: int
    steps: int
    seconds: float
    stopped_because: str
    paper_exact: bool
    base_optimizer: str = "sgd"
    recommended_by: str = "tail"
    events: dict[str, int] = field(default_factory=dict)
    curves: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _new_trajectory(max_points: int) -> dict[str, Any]:
    return {"points": [], "stride": 1, "max_points": max_points, "step": 0, "lr_sum": 0.0}


def _record(traj: dict[str, Any], lr: float) -> None:
    """Record the rate in effect after one more step (point 0 is the initial rate)."""
    traj["step"] += 1
    traj["lr_sum"] = traj.get("lr_sum", 0.0) + lr
    step = traj["step"]
    steps_per_epoch = traj.get("steps_per_epoch")
    if steps_per_epoch and step % steps_per_epoch == 0:
        traj.setdefault("epoch_sums", []).append(traj["lr_sum"])
    if step % traj["stride"] == 0:
        traj["points"].append([step, lr])
        if len(traj["points"]) > traj["max_points"]:
            traj["points"] = traj["points"][::2]
            traj["stride"] *= 2


def _run_mean(traj: dict[str, Any]) -> float:
    """The arithmetic mean of the rate over every step of the run (exact, not thinned)."""
    steps = int(traj["step"])
    if steps == 0 or "lr_sum" not in traj:  # a checkpoint from before the sum was kept
        rates = [lr for _, lr in traj["points"]]
        return sum(rates) / len(rates) if rates else float("nan")
    return float(traj["lr_sum"]) / steps


def _recommended(traj: dict[str, Any], rule: str, best_epoch: int = 0) -> float:
    sums, steps_per_epoch = traj.get("epoch_sums", []), traj.get("steps_per_epoch")
    if rule == "best" and steps_per_epoch and 1 <= best_epoch <= len(sums):
        # the mean rate over the steps that led to the best epoch's weights
        upto = float(sums[best_epoch - 1]) / (best_epoch * steps_per_epoch)
        if upto > 0 and math.isfinite(upto):
            return upto
    mean = _run_mean(traj)
    if rule in ("mean", "best"):
        return mean if mean > 0 and math.isfinite(mean) else _converged(traj["points"], traj["step"])
    return _converged(traj["points"], traj["step"])


def _converged(points: list[list[float]], steps: int) -> float:
    tail = [lr for s, lr in points if s >= 0.75 * steps and lr > 0 and math.isfinite(lr)]
    if not tail:
        tail = [lr for _, lr in points[-1:] if lr > 0 and math.isfinite(lr)]
    if not tail:
        return float("nan")
    return math.exp(sum(math.log(v) for v in tail) / len(tail))


# --------------------------------------------------------------------------------------------
# tuners
# --------------------------------------------------------------------------------------------
class Tuner(abc.ABC):
    """Train a spec once with an online learning-rate tuner and report the converged rate.

    Contract (``tests/core/test_tuning.py``): deterministic given the seed on one device; the
    rate stays finite and > 0; the trajectory starts at ``init_lr``; ``SpecError`` before any
    training for a spec that does not fit; a callback raising ``TrainingCancelled`` ends the run
    with ``stopped_because == "cancelled"``; a checkpointed run resumes identically.
    """

    name: str = "tuner"
    base_optimizer: str = "sgd"
    max_points: int = 256
    recommend: str = "tail"
    r"""How the run's rates become ``recommended_lr``: ``"tail"``, the geometric mean over the last
    quarter of the steps (the converged rate); ``"mean"``, the arithmetic mean over every step
    (the constant rate that covers the same total step size :math:`\sum_t \eta_t`); ``"best"``, the
    arithmetic mean over the steps up to the end of the best validation epoch (the rates that
    produced the reported weights; the whole run's mean when no epoch improved)."""

    def __init__(self, paper_exact: bool = False) -> None:
        self.paper_exact = paper_exact

    @abc.abstractmethod
    def build_optimizer(self, model: nn.Module, init_lr: float) -> Optimizer:
        """The optimizer (possibly wrapped) over ``model.parameters()`` starting at ``init_lr``."""

    def current_lr(self, optimizer: Optimizer) -> float:
        """The single rate this tuner recommends at this point of the run."""
        return float(optimizer.param_groups[0]["lr"])

    def default_init_lr(self) -> float:
        return 0.01

    def events(self, optimizer: Optimizer) -> dict[str, int]:
        return {}

    def make_step(self, optimizer: Optimizer, data: DatasetSplits, config: TrainConfig) -> Callable[..., Any]:
        """The training step (default: forward, backward, ``optimizer.step()``), recording the rate."""
        self._trajectory(optimizer)
        guard = optimizer if isinstance(optimizer, PageHinkley) else None

        def step(model: nn.Module, opt: Optimizer, xb: Tensor, yb: Tensor) -> Any:
            opt.zero_grad(set_to_none=True)
            out = model(xb, yb)
            out.loss.backward()
            if guard is not None:
                guard.step(loss=out.loss)
            else:
                opt.step()
            # looked up each step: a checkpoint load replaces the optimizer's state
            _record(self._trajectory(opt), self.current_lr(opt))
            return out

        return step

    def _trajectory(self, optimizer: Optimizer) -> dict[str, Any]:
        inner = optimizer.optimizer if isinstance(optimizer, PageHinkley) else optimizer
        state = cast(dict[Any, Any], inner.state)
        traj = state.get(TRAJECTORY_KEY)
        if traj is None:
            traj = _new_trajectory(self.max_points)
            traj["points"].append([0, self.current_lr(optimizer)])
            state[TRAJECTORY_KEY] = traj
        return traj

    def build_model(self, spec: ArchSpec, data: DatasetSplits) -> ScreenModel:
        info = data.info
        body = build_body(spec, info)
        head = PlainHead(feature_shape(spec, info)[-1], head_out_features(info), info.task)
        return ScreenModel(body, head, info.task)

    def tune(
        self,
        spec: ArchSpec | str | Path | dict[str, Any],
        dataset: DatasetSplits | str,
        init_lr: float | None = None,
        budget: TrainConfig | None = None,
        seed: int | None = None,
        callback: Callback | None = None,
        *,
        step_hook: StepHook | None = None,
        checkpoint_path: str | Path | None = None,
    ) -> TuningResult:
        config = budget or TrainConfig()
        if seed is not None:
            config = replace(config, seed=seed)
        arch = spec if isinstance(spec, ArchSpec) else parse_spec(spec)
        splits = load_dataset(dataset, seed=config.seed) if isinstance(dataset, str) else dataset
        validate_spec(arch, splits.info)
        lr0 = self.default_init_lr() if init_lr is None else float(init_lr)
        if not (lr0 > 0 and math.isfinite(lr0)):
            raise ValueError(f"Invalid learning rate: {init_lr}")
        torch.manual_seed(config.seed)
        model = self.build_model(arch, splits).to(config.device)
        optimizer = self.build_optimizer(model, lr0)
        step_fn = self.make_step(optimizer, splits, config)
        steps_per_epoch = math.ceil(len(splits.x_train) / config.batch_size)
        if config.max_steps_per_epoch is not None:
            steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
        self._trajectory(optimizer)["steps_per_epoch"] = steps_per_epoch

        wrapped: Callback | None = None
        if callback is not None:
            user_cb = callback

            def wrapped(p: Progress) -> None:
                user_cb(replace(p, extra={**p.extra, "lr": self.current_lr(optimizer)}))

        result = train(
            model,
            optimizer,
            splits,
            config,
            checkpoint_path=checkpoint_path,
            callback=wrapped,
            step_hook=step_hook,
            step_fn=step_fn,
        )
        traj = self._trajectory(optimizer)  # reloaded from a checkpoint if resumed
        points = [list(p) for p in traj["points"]]
        return TuningResult(
            tuner=self.name,
            spec_name=arch.name,
            spec_hash=spec_hash(arch),
            dataset=splits.info.name,
            task=splits.info.task,
            seed=config.seed,
            init_lr=lr0,
            recommended_lr=_recommended(traj, self.recommend, result.best_epoch),
            final_lr=self.current_lr(optimizer),
            trajectory=points,
            **result.metric_fields(splits.info.task),
            paper_exact=self.paper_exact,
            base_optimizer=self.base_optimizer,
            recommended_by=self.recommend,
            events=self.events(optimizer),
        )


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

    def build_optimizer(self, model: nn.Module, init_lr: float) -> Optimizer:
        inner = FD2SGD(
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
        self._trajectory(optimizer)
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
                    idx = order[start : start + n]
                    ex, ey = x_val.index_select(0, idx), y_val.index_select(0, idx)
                else:
                    ex, ey = xb[:n_eval], yb[:n_eval]
                kwargs["loss_at"] = functional_loss(model, ex, ey)
                # vmap cannot batch cuDNN's fused RNN kernels (they need real weight storage),
                # so recurrent models and models with buffers are evaluated sequentially.
                if batched_ok and device.type != "cpu" and _vmappable(model):
                    kwargs["loss_at_batched"] = batched_functional_loss(model, ex, ey)
            if ph is not None:
                ph.step(loss=out.loss, **kwargs)
            else:
                optimizer.step(**kwargs)
            _record(self._trajectory(optimizer), fd2.lr)
            return out

        return step


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


# Keyed by :data:`archscreen.core.names.TunerName` (the API and CLI read the names from there).
TUNERS: dict[TunerName, Callable[..., Tuner]] = {
    "fd2": FD2Tuner,
    "fd1": FD1Tuner,
    "salera": lambda paper_exact=False, **kw: SALERATuner(paper_exact, parameterwise=False, **kw),
    "spalera": lambda paper_exact=False, **kw: SALERATuner(paper_exact, parameterwise=True, **kw),
    "ag-adam": AgAdamTuner,
}
assert tuple(TUNERS) == TUNER_NAMES, "core/names.py TunerName and TUNERS list different tuners"


def get_tuner(name: str, paper_exact: bool = False, **kwargs: Any) -> Tuner:
    """A tuner from the registry by name (``fd2``, ``fd1``, ``salera``, ``spalera``, ``ag-adam``)."""
    try:
        factory = TUNERS[name]  # type: ignore[index]  # a str from the caller, checked here
    except KeyError:
        raise ValueError(f"unknown tuner {name!r}; choose from {', '.join(TUNERS)}") from None
    return factory(paper_exact=paper_exact, **kwargs)


def tune(
    spec: ArchSpec | str | Path | dict[str, Any],
    dataset: DatasetSplits | str,
    init_lr: float | None = None,
    budget: TrainConfig | None = None,
    seed: int | None = None,
    callback: Callback | None = None,
    *,
    tuner: str | Tuner = "fd2",
    paper_exact: bool = False,
    checkpoint_path: str | Path | None = None,
) -> TuningResult:
    """Tune one candidate (default ``fd2``); the entry point the CLI and worker call."""
    t = tuner if isinstance(tuner, Tuner) else get_tuner(tuner, paper_exact=paper_exact)
    return t.tune(spec, dataset, init_lr, budget, seed, callback, checkpoint_path=checkpoint_path)

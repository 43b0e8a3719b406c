"""Time per training step of the rate tuners vs a plain ``torch.optim.SGD`` step, in one run.

Models (batch 128 by default): MLP 40→256→256, LeNet-5 on 28×28, char-LSTM (the same bodies as
``bench/alrao_overhead.py``), each with one ``PlainHead``. Configurations, all on the same
model and batch, steps interleaved in rounds (median round reported):

* ``sgd``: plain ``torch.optim.SGD`` (the baseline);
* ``fd2-paper``: :class:`FD2SGD` paper-exact: η updated every step from five losses on the full
  training batch, ε = 1e-5, no guards. Its bound is ``1 + 5 × forward/step`` (printed as ``bound``,
  forward = one no-grad forward of the loss);
* ``fd2``: the default ``fd2`` tuner configuration (see ``archscreen.core.tuning.FD2Tuner``);
* ``fd1``: :class:`FD1SGD`; ``salera``: ALERA inside the Page-Hinkley guard;
* ``adam``: plain ``torch.optim.Adam`` (the baseline of the Adam tuner);
* ``fd2-adam``: the default ``fd2-adam`` tuner (:class:`FD2Adam`, fd2's defaults on Adam's
  direction); its ratio is against ``adam``, the others' against ``sgd``.

Each tuner step is the tuner's own training step (``Tuner.make_step``), trajectory recording
included. Last lines: ``fd2_adam_step_ratio: X`` (fd2-adam / Adam, worst model) and
``fd2_step_ratio: X`` (default fd2 / SGD, worst model).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine_line, time_steps
from alrao_overhead import MODELS, make_batch

from archscreen.core.data.base import DatasetInfo, DatasetSplits
from archscreen.core.spec import parse_spec
from archscreen.core.training.loop import TrainConfig
from archscreen.core.tuning import FD2Tuner, Tuner, get_tuner

CONFIGS = ["sgd", "fd2-paper", "fd2", "fd1", "salera", "adam", "fd2-adam"]
BASELINE = {"fd2-adam": "adam"}  # every other ratio is against sgd


def _tuner(name: str) -> Tuner | None:
    if name in ("sgd", "adam"):
        return None
    if name == "fd2-paper":
        return FD2Tuner(paper_exact=True)
    return get_tuner(name)


def _fake_splits(info: DatasetInfo, x: torch.Tensor, y: torch.Tensor) -> DatasetSplits:
    return DatasetSplits(info=info, x_train=x, y_train=y, x_val=x, y_val=y, x_test=x, y_test=y)


def measure(name: str, batch: int, device: str, steps: int, rounds: int) -> dict[str, float]:
    spec_dict, info = MODELS[name]
    spec = parse_spec(spec_dict)
    x, y = make_batch(info, batch, device)
    data = _fake_splits(info, x, y)
    config = TrainConfig(batch_size=batch, device=device)
    runs: dict[str, Any] = {}
    fwd_model = None
    for cfg in CONFIGS:
        tuner = _tuner(cfg)
        torch.manual_seed(0)
        model = (tuner or get_tuner("fd1")).build_model(spec, data).to(device)
        if tuner is None:
            opt: torch.optim.Optimizer = (
                torch.optim.Adam(model.parameters(), lr=1e-3)
                if cfg == "adam"
                else torch.optim.SGD(model.parameters(), lr=0.01)
            )

            def step(model: Any = model, opt: torch.optim.Optimizer = opt, fn: Any = None) -> None:
                opt.zero_grad(set_to_none=True)
                out = model(x, y)
                out.loss.backward()
                opt.step()

            fwd_model = model if cfg == "sgd" else fwd_model
        else:
            opt = tuner.build_optimizer(model, tuner.default_init_lr())
            fn = tuner.make_step(opt, data, config)

            def step(model: Any = model, opt: torch.optim.Optimizer = opt, fn: Any = fn) -> None:
                fn(model, opt, x, y)

        for _ in range(5):
            step()
        runs[cfg] = step
    assert fwd_model is not None

    def forward(model: Any = fwd_model) -> None:
        with torch.no_grad():
            model(x, y).loss.item()

    runs["forward"] = forward
    sync = device.startswith("cuda")
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(rounds):
        for k, fn in runs.items():
            times[k].append(time_steps(fn, steps, sync))
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {f"{k}_ms": v * 1e3 for k, v in med.items()}
    for k in CONFIGS[1:]:
        out[f"{k}_ratio"] = med[k] / med[BASELINE.get(k, "sgd")]
    out["bound"] = 1 + 5 * med["forward"] / med["sgd"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--steps", type=int, default=20, help="steps per timing round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    d = FD2Tuner()
    print(f"# {machine_line()}; batch {args.batch}")
    print(
        f"# fd2 default: every={d.every}, eval_samples={d.eval_samples}, eps={d.eps} "
        f"(relative={d.relative_eps}), eval_dtype={d.eval_dtype}, max_change={d.max_change}"
    )
    head = f"{'model':<10} {'sgd ms':>7} " + " ".join(
        f"{c + ' ×':>11}" if c != "adam" else f"{'adam ms':>11}" for c in CONFIGS[1:]
    )
    print(head + f" {'bound':>7}")
    worst = worst_adam = 0.0
    t0 = time.perf_counter()
    for name in args.models.split(","):
        m = measure(name, args.batch, args.device, args.steps, args.rounds)
        cols = " ".join(
            f"{m[c + '_ratio']:>11.3f}" if c != "adam" else f"{m['adam_ms']:>11.3f}" for c in CONFIGS[1:]
        )
        print(f"{name:<10} {m['sgd_ms']:>7.3f} {cols} {m['bound']:>7.3f}", flush=True)
        worst = max(worst, m["fd2_ratio"])
        worst_adam = max(worst_adam, m["fd2-adam_ratio"])
    print(f"# {time.perf_counter() - t0:.0f} s; fd2-adam × is against adam, the others against sgd")
    print(f"fd2_adam_step_ratio: {worst_adam:.3f}")
    print(f"fd2_step_ratio: {worst:.3f}")


if __name__ == "__main__":
    main()

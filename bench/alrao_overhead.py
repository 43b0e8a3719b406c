"""Time per training step of Alrao vs plain ``torch.optim.SGD``, in one run.

For each model (MLP 40→256→256, LeNet-5 on 28×28, char-LSTM) and batch size
(32, 128, 512), the same body and data are trained with

* baseline: one ``nn.Linear`` output layer + ``torch.optim.SGD``;
* Alrao: ``AlraoHead`` with N copies (one fused matmul, custom backward) +
  ``AlraoSGD`` over per-feature rates + the Switch update.

N copies cost N× the head's compute, which no implementation avoids, so the
script also prints the bound r* = (body MACs + N·head MACs) / (body MACs +
head MACs) and the excess = measured ratio / r*. Steps of the two
configurations are interleaved in rounds and the median round is reported,
so drift of the machine affects both alike.

Last line: ``alrao_excess_b128: X`` (worst model at batch 128).

``--compile-head`` / ``--compile-step`` add a third configuration, the same Alrao model with
``AlraoHead(compile=True)`` and/or ``torch.compile(optimizer.step)``, interleaved with the other
two. Its columns: the compiled excess, ``compile s`` (the first compiled step's time less a
steady step: what compiling cost), ``saved ms`` (eager minus compiled step time) and
``break-even`` (steps it takes the saving to repay the compilation; ``never`` when nothing is
saved). A screening run of the MLP on mnist1d (4000 training samples, 50 epochs at most) is
6250 steps at batch 32 and 1600 at batch 128, and every new batch shape (the last partial
batch, evaluation) compiles again.
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
from _common import forward_macs, machine_line, time_steps

from archscreen.core.alrao import AlraoHead, AlraoSGD, alrao_param_groups
from archscreen.core.data.base import DatasetInfo
from archscreen.core.spec import build_body, feature_shape, parse_spec
from archscreen.core.training.model import PlainHead, ScreenModel

MODELS: dict[str, tuple[dict[str, Any], DatasetInfo]] = {
    "mlp": (
        {
            "name": "mlp",
            "layers": ["flatten", {"linear": 256}, "relu", {"linear": 256}, "relu"],
            "head": "classifier",
        },
        DatasetInfo(name="bench", task="classification", input_shape=(1, 40), num_classes=10),
    ),
    "lenet5": (
        {
            "name": "lenet5",
            "layers": [
                {"conv2d": {"out": 6, "kernel": 5, "padding": 2}},
                "relu",
                {"maxpool2d": 2},
                {"conv2d": {"out": 16, "kernel": 5}},
                "relu",
                {"maxpool2d": 2},
                "flatten",
                {"linear": 120},
                "relu",
                {"linear": 84},
                "relu",
            ],
            "head": "classifier",
        },
        DatasetInfo(name="bench", task="classification", input_shape=(1, 28, 28), num_classes=10),
    ),
    "char_lstm": (
        {"name": "char_lstm", "layers": [{"embedding": 32}, {"lstm": 128}], "head": "classifier"},
        DatasetInfo(
            name="bench",
            task="language_model",
            input_shape=(64,),
            input_kind="tokens",
            num_classes=60,
            vocab_size=60,
        ),
    ),
}


def make_batch(info: DatasetInfo, batch: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    assert info.num_classes is not None
    if info.input_kind == "tokens":
        x = torch.randint(0, info.vocab_size or 2, (batch, *info.input_shape), generator=g)
        y = torch.randint(0, info.num_classes, (batch, *info.input_shape), generator=g)
    else:
        x = torch.randn(batch, *info.input_shape, generator=g)
        y = torch.randint(0, info.num_classes, (batch,), generator=g)
    return x.to(device), y.to(device)


def build(
    name: str, alrao: bool, copies: int, device: str, compile_head: bool = False
) -> tuple[ScreenModel, torch.optim.Optimizer]:
    spec_dict, info = MODELS[name]
    spec = parse_spec(spec_dict)
    torch.manual_seed(0)
    body = build_body(spec, info)
    width = feature_shape(spec, info)[-1]
    assert info.num_classes is not None
    opt: torch.optim.Optimizer
    if alrao:
        head: torch.nn.Module = AlraoHead(width, info.num_classes, copies, 1e-5, 10.0, compile=compile_head)
        model = ScreenModel(body, head, info.task).to(device)
        assert isinstance(head, AlraoHead)
        opt = AlraoSGD([*alrao_param_groups(body), head.param_group()], 1e-5, 10.0, seed=0)
    else:
        head = PlainHead(width, info.num_classes, info.task)
        model = ScreenModel(body, head, info.task).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
    return model, opt


def bound(name: str, copies: int) -> float:
    spec_dict, info = MODELS[name]
    spec = parse_spec(spec_dict)
    body = build_body(spec, info)
    x, _ = make_batch(info, 1, "cpu")
    body_macs = forward_macs(body, x)
    steps = info.input_shape[0] if info.task == "language_model" else 1
    assert info.num_classes is not None
    head_macs = steps * feature_shape(spec, info)[-1] * info.num_classes
    return (body_macs + copies * head_macs) / (body_macs + head_macs)


def measure(
    name: str,
    batch: int,
    copies: int,
    device: str,
    steps: int,
    rounds: int,
    compile_head: bool = False,
    compile_step: bool = False,
) -> dict[str, float]:
    """Step times of SGD and Alrao (and compiled Alrao when asked), interleaved in rounds."""
    _, info = MODELS[name]
    x, y = make_batch(info, batch, device)
    sync = device.startswith("cuda")
    configs = ["sgd", "alrao"] + (["compiled"] if compile_head or compile_step else [])
    runs = {}
    first_step_s = 0.0
    for cfg in configs:
        compiled = cfg == "compiled"
        model, opt = build(name, cfg != "sgd", copies, device, compile_head and compiled)
        opt_step = torch.compile(opt.step) if compiled and compile_step else opt.step

        def step(
            model: ScreenModel = model, opt: torch.optim.Optimizer = opt, opt_step: Any = opt_step
        ) -> None:
            opt.zero_grad(set_to_none=True)
            out = model(x, y)
            out.loss.backward()
            opt_step()
            model.after_step(out)

        if compiled:
            first_step_s = time_steps(step, 1, sync)  # includes compiling forward, backward, step
        for _ in range(5):
            step()
        runs[cfg] = step
    times: dict[str, list[float]] = {cfg: [] for cfg in configs}
    for _ in range(rounds):
        for cfg in configs:
            times[cfg].append(time_steps(runs[cfg], steps, sync))
    med = {cfg: statistics.median(t) for cfg, t in times.items()}
    b, a = med["sgd"], med["alrao"]
    r_star = bound(name, copies)
    out = {
        "sgd_ms": b * 1e3,
        "alrao_ms": a * 1e3,
        "ratio": a / b,
        "r_star": r_star,
        "excess": a / b / r_star,
    }
    if "compiled" in med:
        c = med["compiled"]
        saved = a - c
        out.update(
            compiled_ms=c * 1e3,
            compiled_excess=c / b / r_star,
            compile_s=first_step_s - c,
            saved_ms=saved * 1e3,
            break_even=(first_step_s - c) / saved if saved > 0 else float("inf"),
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--batches", default="32,128,512")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--steps", type=int, default=20, help="steps per timing round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--compile-head", action="store_true", help="also AlraoHead(compile=True)")
    parser.add_argument("--compile-step", action="store_true", help="also torch.compile(optimizer.step)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    compiling = args.compile_head or args.compile_step
    what = "+".join(w for w, on in (("head", args.compile_head), ("step", args.compile_step)) if on)
    print(f"# {machine_line()}; N = {args.copies} copies" + (f"; compiled: {what}" if compiling else ""))
    header = f"{'model':<10} {'batch':>5} {'sgd ms':>8} {'alrao ms':>9} {'ratio':>6} {'r*':>6} {'excess':>7}"
    if compiling:
        header += f" {'comp ms':>8} {'comp exc':>8} {'compile s':>9} {'saved ms':>8} {'break-even':>10}"
    print(header)
    worst128 = 0.0
    started = time.perf_counter()
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            m = measure(
                name, batch, args.copies, args.device, args.steps, args.rounds,
                args.compile_head, args.compile_step,
            )  # fmt: skip
            line = (
                f"{name:<10} {batch:>5} {m['sgd_ms']:>8.3f} {m['alrao_ms']:>9.3f} {m['ratio']:>6.3f} "
                f"{m['r_star']:>6.3f} {m['excess']:>7.3f}"
            )
            if compiling:
                even = "never" if m["break_even"] == float("inf") else f"{m['break_even']:.0f}"
                line += (
                    f" {m['compiled_ms']:>8.3f} {m['compiled_excess']:>8.3f} {m['compile_s']:>9.2f} "
                    f"{m['saved_ms']:>8.3f} {even:>10}"
                )
            print(line, flush=True)
            if batch == 128:
                worst128 = max(worst128, m["excess"])
    print(f"# {time.perf_counter() - started:.0f} s")
    print(f"alrao_excess_b128: {worst128:.3f}")


if __name__ == "__main__":
    main()

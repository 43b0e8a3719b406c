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
"""

from __future__ import annotations

import argparse
import statistics
import sys
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
    name: str, batch: int, copies: int, device: str, steps: int, rounds: int, compile_head: bool = False
) -> dict[str, float]:
    _, info = MODELS[name]
    x, y = make_batch(info, batch, device)
    runs = {}
    for alrao in (False, True):
        model, opt = build(name, alrao, copies, device, compile_head and alrao)

        def step(model: ScreenModel = model, opt: torch.optim.Optimizer = opt) -> None:
            opt.zero_grad(set_to_none=True)
            out = model(x, y)
            out.loss.backward()
            opt.step()
            model.after_step(out)

        for _ in range(5):
            step()
        runs[alrao] = step
    sync = device.startswith("cuda")
    base_t, alrao_t = [], []
    for _ in range(rounds):
        base_t.append(time_steps(runs[False], steps, sync))
        alrao_t.append(time_steps(runs[True], steps, sync))
    b, a = statistics.median(base_t), statistics.median(alrao_t)
    r_star = bound(name, copies)
    return {
        "sgd_ms": b * 1e3,
        "alrao_ms": a * 1e3,
        "ratio": a / b,
        "r_star": r_star,
        "excess": a / b / r_star,
    }


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
    parser.add_argument("--compile-head", action="store_true", help="AlraoHead(compile=True)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# {machine_line()}; N = {args.copies} copies")
    print(f"{'model':<10} {'batch':>5} {'sgd ms':>8} {'alrao ms':>9} {'ratio':>6} {'r*':>6} {'excess':>7}")
    worst128 = 0.0
    for name in args.models.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            m = measure(name, batch, args.copies, args.device, args.steps, args.rounds, args.compile_head)
            print(
                f"{name:<10} {batch:>5} {m['sgd_ms']:>8.3f} {m['alrao_ms']:>9.3f} {m['ratio']:>6.3f} "
                f"{m['r_star']:>6.3f} {m['excess']:>7.3f}",
                flush=True,
            )
            if batch == 128:
                worst128 = max(worst128, m["excess"])
    print(f"alrao_excess_b128: {worst128:.3f}")


if __name__ == "__main__":
    main()

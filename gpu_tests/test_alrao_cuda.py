"""CUDA-only checks: foreach by default, no host sync in a training step, CUDA == CPU in float64.

Run on a GPU machine: `pytest gpu_tests` (outside the default suite, which is CPU-only).
``pytest -s`` also prints a step-time comparison with plain SGD.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from archscreen.core.alrao import AlraoAdam, AlraoHead, AlraoSGD, alrao_param_groups
from archscreen.core.alrao import optim as alrao_optim


def _model(width: int = 64, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, AlraoHead]:
    torch.manual_seed(0)
    body = nn.Sequential(
        nn.Linear(16, width),
        nn.BatchNorm1d(width),
        nn.Tanh(),
        nn.Linear(width, width),
        nn.LayerNorm(width),
        nn.Tanh(),
    ).to(dtype)
    head = AlraoHead(width, 10, 10, 1e-5, 10.0).to(dtype)
    return body, head


def _step(
    body: nn.Module, head: AlraoHead, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
) -> None:
    out = head(body(x), y)
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    head.switch.update(out.copy_loglik)


OPTS: list[tuple[str, Any]] = [
    ("sgd", lambda g: AlraoSGD(g, 1e-5, 10.0)),
    ("sgd_momentum", lambda g: AlraoSGD(g, 1e-5, 10.0, momentum=0.9, weight_decay=1e-4)),
    ("adam", lambda g: AlraoAdam(g, 1e-6, 1e-1, weight_decay=1e-4)),
]


@pytest.mark.parametrize(("name", "factory"), OPTS, ids=[n for n, _ in OPTS])
def test_cuda_step_foreach_by_default_and_no_host_sync(
    name: str, factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"multi": 0}
    orig = alrao_optim._multi_tensor_apply_rates

    def counting(*args: Any) -> None:
        calls["multi"] += 1
        orig(*args)

    monkeypatch.setattr(alrao_optim, "_multi_tensor_apply_rates", counting)
    body, head = _model()
    body, head = body.cuda(), head.cuda()
    assert head.switch.log_w.dtype == torch.float64 and head.switch.log_w.is_cuda
    opt = factory([*alrao_param_groups(body), head.param_group()])
    x = torch.randn(32, 16, device="cuda")
    y = torch.randint(0, 10, (32,), device="cuda")
    _step(body, head, opt, x, y)  # warm-up: lazy state, library handles
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            _step(body, head, opt, x, y)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    assert calls["multi"] == 4  # one fused call per step: all groups at once
    assert all(bool(torch.isfinite(p).all()) for p in body.parameters())


@pytest.mark.parametrize(("name", "factory"), OPTS, ids=[n for n, _ in OPTS])
def test_cuda_matches_cpu_float64(name: str, factory: Any) -> None:
    runs = []
    for device in ("cpu", "cuda"):
        body, head = _model(dtype=torch.float64)
        body, head = body.to(device), head.to(device)
        opt = factory([*alrao_param_groups(body), head.param_group()])
        g = torch.Generator().manual_seed(1)
        for _ in range(5):
            x = torch.randn(32, 16, generator=g, dtype=torch.float64).to(device)
            y = torch.randint(0, 10, (32,), generator=g).to(device)
            _step(body, head, opt, x, y)
        runs.append(
            [p.detach().cpu() for p in [*body.parameters(), *head.parameters()]] + [head.switch.log_w.cpu()]
        )
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(("task", "out"), [("classification", 10), ("regression", 3)])
def test_cuda_fast_head_equals_reference(task: str, out: int) -> None:
    torch.manual_seed(0)
    fast = AlraoHead(32, out, 6, 1e-3, 1.0, task=task).double().cuda()  # type: ignore[arg-type]
    ref = AlraoHead(32, out, 6, 1e-3, 1.0, task=task, impl="reference").double().cuda()  # type: ignore[arg-type]
    ref.load_state_dict(fast.state_dict())
    z = torch.randn(4, 9, 32, dtype=torch.float64, device="cuda")
    if task == "classification":
        y = torch.randint(0, out, (4, 9), device="cuda")
    else:
        y = torch.randn(4, 9, out, dtype=torch.float64, device="cuda")
    grads = []
    for head in (fast, ref):
        zz = z.clone().requires_grad_()
        o = head(zz, y)
        o.loss.backward()
        grads.append((o.loss, zz.grad, head.weight.grad, head.bias.grad))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _time_steps(fn: Any, n: int = 50) -> float:
    for _ in range(10):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(n):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / n


@pytest.mark.parametrize("batch", [32, 128])
def test_cuda_step_time_report(batch: int) -> None:
    """Prints ms/step; asserts only a loose bound (Alrao < 4x plain SGD)."""
    width = 1024
    x = torch.randn(batch, 16, device="cuda")
    y = torch.randint(0, 10, (batch,), device="cuda")
    body, _ = _model(width)
    body = body.cuda()
    lin = nn.Linear(width, 10).cuda()
    sgd = torch.optim.SGD([*body.parameters(), *lin.parameters()], lr=0.01)

    def plain() -> None:
        loss = nn.functional.cross_entropy(lin(body(x)), y)
        sgd.zero_grad()
        loss.backward()
        sgd.step()

    times = {"plain_sgd": _time_steps(plain)}
    for impl, foreach in (("fast", None), ("reference", False)):
        body_a, _ = _model(width)
        body_a = body_a.cuda()
        head = AlraoHead(width, 10, 10, 1e-5, 10.0, impl=impl).cuda()  # type: ignore[arg-type]
        opt = AlraoSGD([*alrao_param_groups(body_a), head.param_group()], 1e-5, 10.0, foreach=foreach)
        times[f"alrao_{impl}"] = _time_steps(lambda b=body_a, h=head, o=opt: _step(b, h, o, x, y))
    print(
        f"\n[{torch.cuda.get_device_name()}] batch={batch} ms/step: "
        + ", ".join(f"{k}={v:.3f}" for k, v in times.items())
    )
    assert times["alrao_fast"] < 4 * times["plain_sgd"]

"""K jobs on one GPU (``archscreen worker --gpus 0 --jobs-per-gpu K``) and the CUDA-graphs switch, on
a real GPU. The CPU suite checks the arguments, the process layout and the stored OOM reason with a
simulated error (tests/worker/test_gpu_sharing.py); here the cap is real.

* A job whose model does not fit its 1/K share fails with the stored reason, in GiB; a small job
  on the same GPU at the same time succeeds, with its share applied.
* A screening with ``with_cuda_graphs`` compiles the body and trains to nearly the eager result.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from archscreen.core.screening import AlraoScreener
from archscreen.core.training.graphs import with_cuda_graphs
from archscreen.core.training.loop import TrainConfig
from tests.worker.procs import deployment, wait_for

K = 16  # a share of 0.95/16 of an H200's 140 GiB: about 8.3 GiB
# 30000 x 30000 weights: 3.4 GiB, the same again for their gradients, twice for Adam's moments
HUGE = {
    "name": "huge",
    "layers": ["flatten", {"linear": 30000}, "relu", {"linear": 30000}, "relu"],
    "head": "classifier",
}
SMALL = {"name": "small", "layers": ["flatten", {"linear": 64}, "relu"], "head": "classifier"}


def test_a_job_over_its_share_fails_with_its_reason_and_its_neighbour_trains_on(tmp_path: Path) -> None:
    with deployment(tmp_path) as d:
        log = open(tmp_path / "gpus.log", "ab")  # noqa: SIM115 - closed below
        supervisor = subprocess.Popen(
            [sys.executable, "-m", "archscreen", "worker", "--gpus", "0", "--jobs-per-gpu", str(K)],
            env=d.env,
            cwd=tmp_path,  # the repo root would shadow the installed package
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        d.procs["gpus"] = supervisor
        try:
            d.wait_worker_ready(timeout=180)
            study = d.study(dataset="mnist1d", max_epochs=3, patience=3, batch_size=64)
            huge, small = d.add_jobs(study, [HUGE, SMALL])
            wait_for(
                lambda: all(d.job(i).state not in ("queued", "running") for i in (huge, small)),
                600,
                "both jobs to end",
                d.logs,
            )
        finally:
            log.close()
        failed, ok = d.job(huge), d.job(small)
    assert failed.state == "failed", (failed.error, d.logs())
    assert failed.error is not None
    assert re.fullmatch(
        rf"job needs more than the 1/{K} share of GPU 0: \d+\.\d\d GiB; lower --jobs-per-gpu", failed.error
    )
    assert ok.state == "succeeded", ok.error
    assert ok.result is not None and str(ok.result["device"]).startswith("cuda")
    share = ok.result["gpu_share"]
    assert share["applied"] is True and share["jobs_per_gpu"] == K and share["gpu"] == "0"
    total_gib = torch.cuda.get_device_properties(0).total_memory / 1024**3
    assert share["share_gib"] == pytest.approx(0.95 / K * total_gib, abs=0.01)


def test_cuda_graphs_compile_the_body_and_train_as_eager() -> None:
    spec = {
        "name": "mlp",
        "layers": ["flatten", {"linear": 128}, "relu", {"linear": 128}, "relu"],
        "head": "classifier",
    }
    config = TrainConfig(max_epochs=2, patience=5, batch_size=128, seed=0, device="cuda")
    eager = AlraoScreener(base="sgd").screen(spec, "mnist1d", config)
    screener = with_cuda_graphs(AlraoScreener(base="sgd"), "cuda")
    graphed = screener.screen(spec, "mnist1d", config)
    assert screener.cuda_graphs.startswith("CUDA graphs on: ")  # type: ignore[attr-defined]
    assert graphed.epochs == eager.epochs and graphed.steps == eager.steps
    # compiled kernels round differently; two epochs keep the runs close, not equal
    assert graphed.val_loss == pytest.approx(eager.val_loss, rel=0.05)
    print(f"\neager {eager.seconds:.2f} s, graphs {graphed.seconds:.2f} s (compile included)")

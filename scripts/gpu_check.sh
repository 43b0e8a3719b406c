#!/usr/bin/env bash
# The checks that need a GPU, as one script for a CUDA machine (see docs/benchmarks.md):
# the GPU tests, then the Alrao and tuner overhead benches on CUDA, and the Alrao bench on
# 2 CPU threads of the same (otherwise idle) machine. Outputs go to ${OUT:-gpu-out}/.
# Expects torch with CUDA installed; other missing packages can be wheels in .whl/.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-out}"
mkdir -p "$out"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site . || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONUNBUFFERED=1
nvidia-smi -L | tee "$out/device.txt"
# -P: the repo root must not shadow the installed package on sys.path
python3 -P -m pytest -q -p no:cacheprovider gpu_tests 2>&1 | tee "$out/gpu_tests.txt" | tail -3
python3 bench/alrao_overhead.py --device cuda 2>&1 | tee "$out/alrao_overhead_cuda.txt"
python3 bench/tuner_overhead.py --device cuda 2>&1 | tee "$out/tuner_overhead_cuda.txt"
python3 bench/alrao_overhead.py --device cpu --threads 2 --rounds 5 --steps 10 2>&1 | tee "$out/alrao_overhead_cpu2.txt"

#!/usr/bin/env bash
# Create .venv (or $ARCHSCREEN_VENV) and install archscreen with its test tools.
# torch is installed first and pinned, so pip never resolves a CUDA wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${ARCHSCREEN_VENV:-.venv}"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet torch==2.13.0
"$venv/bin/python" -m pip install --quiet -e '.[dev,bench]'
"$venv/bin/archscreen" --version

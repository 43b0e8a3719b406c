"""bench/gpu_throughput.py's own pieces: the K list it accepts and the queue it builds from examples/."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import gpu_throughput  # noqa: E402


def test_ks_must_include_the_baseline_and_stay_in_range() -> None:
    assert gpu_throughput.parse_ks("4,1,2,2") == [1, 2, 4]
    for bad, message in [
        ("2,4", "must include 1"),
        ("1,65", "from 1 to 64"),
        ("1,0", "from 1 to 64"),
        ("1,x", "comma-separated integers"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            gpu_throughput.parse_ks(bad)


def test_the_small_examples_name_their_datasets() -> None:
    specs = gpu_throughput.example_specs(gpu_throughput.SMALL)
    assert [(n, d) for n, d, _ in specs] == [
        ("mlp", "mnist1d"),
        ("lenet5", "digits"),
        ("logistic_regression", "mnist1d"),
        ("gru_classifier", "mnist1d"),
        ("char_lstm", "chartext"),
        ("mlp_regression", "regression"),
    ]
    assert all(spec["name"] == name for name, _, spec in specs)
    with pytest.raises(SystemExit, match="no example 'nope'"):
        gpu_throughput.example_specs(["nope"])

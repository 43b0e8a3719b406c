"""``archscreen validate SPACE.yaml``: the size, a seeded sample's validity, path-named errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archscreen.cli import main
from tests.conftest import EXAMPLES, example_dataset

SPACES = sorted((EXAMPLES / "spaces").glob("*.yaml"))


def test_the_three_example_spaces_are_shipped() -> None:
    assert [p.name for p in SPACES] == ["cnn_space.yaml", "mlp_space.yaml", "transformer_space.yaml"]


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.stem)
def test_example_space_validates(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["validate", str(path), "--dataset", example_dataset(path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["space"] is True and out["samples"] == 20 and out["seed"] == 0
    assert out["valid"] >= 10
    assert out["valid"] + sum(r["count"] for r in out["refused"]) == 20
    assert out["size"] > 1


def test_human_output_reports_size_and_refusal_reasons(capsys: pytest.CaptureFixture[str]) -> None:
    path = EXAMPLES / "spaces" / "transformer_space.yaml"
    assert main(["validate", str(path), "--dataset", "chartext", "--samples", "20", "--seed", "0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "transformer_space on chartext: search space"
    assert "size: continuous (its discrete part: 144 points)" in out
    assert out[3].startswith("sampled 20 points (random sampler, seed 0): ")
    assert any("transformer_block.heads: must divide dim" in line for line in out[4:])


def test_same_seed_same_report(capsys: pytest.CaptureFixture[str]) -> None:
    args = [
        "validate",
        str(EXAMPLES / "spaces" / "cnn_space.yaml"),
        "--dataset",
        "digits",
        "--json",
        "--seed",
        "4",
    ]
    main(args)
    first = capsys.readouterr().out
    main(args)
    assert capsys.readouterr().out == first


def test_malformed_space_is_one_path_named_line_per_issue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("space: {oops: 1}\nlayers: [flatten, {linear: {int: [8, 4]}}]\nhead: classifier\n")
    assert main(["validate", str(path), "--dataset", "digits"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"archscreen validate: error: {path}: space.oops: unknown field (known: limits)",
        f"{path}: layers[1].linear.int: lo must not exceed hi, got [8, 4]",
    ]


def test_a_space_with_no_valid_point_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "too_big.yaml"
    path.write_text(
        "space: {limits: {max_params: 10}}\nlayers: [flatten, {linear: {choice: [8, 16]}}]\nhead: classifier"
    )
    assert main(["validate", str(path), "--dataset", "digits", "--samples", "3"]) == 1
    captured = capsys.readouterr()
    assert "spec: " in captured.out and "parameters exceed the limit of 10" in captured.out
    assert captured.err.strip().endswith("none of 3 sampled points is valid on digits")


def test_plain_specs_validate_as_before(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(EXAMPLES / "lenet5.yaml"), "--dataset", "digits", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is True and out["num_params"] == 21386 and "space" not in out

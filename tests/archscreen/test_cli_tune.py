"""``archscreen tune``: JSON fields, start from a screening, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from archscreen.cli import main
from tests.conftest import EXAMPLES

SPEC = str(EXAMPLES / "logistic_regression.yaml")
FAST = ["--dataset", "mnist1d", "--max-epochs", "1", "--batch-size", "256"]


def test_tune_json_has_the_documented_fields(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune", SPEC, *FAST, "--tuner", "fd2", "--init-lr", "0.05", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("recommended_lr", "trajectory", "val_loss", "test_accuracy", "stopped_because"):
        assert key in out
    assert out["trajectory"][0] == [0, 0.05] and out["tuner"] == "fd2" and not out["paper_exact"]
    assert out["recommended_lr"] > 0 and out["recommended_by"] == "best"


def test_tune_from_screen_and_paper_exact(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    screen = tmp_path / "screen.json"
    posterior = [{"lr": 0.01, "weight": 0.5}, {"lr": 1.0, "weight": 0.5}]
    screen.write_text(json.dumps({"switch_posterior": posterior, "preferred_lr": 0.1}))
    args = ["tune", SPEC, *FAST, "--tuner", "salera", "--from-screen", str(screen), "--paper-exact", "--json"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["init_lr"] == pytest.approx(0.1) and out["paper_exact"] is True


def test_tune_progress_shows_the_rate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune", SPEC, *FAST, "--tuner", "fd1"]) == 0
    captured = capsys.readouterr()
    assert "lr " in captured.err and "recommended lr" in captured.out
    assert "converged rate" in captured.out


def test_tune_summary_says_how_fd2_read_its_rate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tune", SPEC, *FAST, "--tuner", "fd2"]) == 0
    assert "mean rate up to best epoch 1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra,code,message",
    [
        (["--tuner", "fd3"], 2, "invalid choice: 'fd3'"),
        (["--init-lr", "-1"], 2, "expected a positive number"),
        (["--init-lr", "0.1", "--from-screen", "x.json"], 2, "not allowed with argument"),
        (["--from-screen", "/nonexistent.json"], 1, "--from-screen: /nonexistent.json: no such file"),
    ],
)
def test_bad_input_is_one_line(
    extra: list[str], code: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) if code == 2 else _nullcontext() as exc:
        rc = main(["tune", SPEC, *FAST, *extra])
    err = capsys.readouterr().err
    assert (exc.value.code if code == 2 else rc) == code  # type: ignore[union-attr]
    assert message in err and len(err.strip().splitlines()) == 1


def test_from_screen_without_posterior(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "grid.json"
    bad.write_text(json.dumps({"switch_posterior": None}))
    assert main(["tune", SPEC, *FAST, "--from-screen", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "no Switch posterior" in err and len(err.strip().splitlines()) == 1
    bad.write_text("not json")
    assert main(["tune", SPEC, *FAST, "--from-screen", str(bad)]) == 1
    assert "not JSON" in capsys.readouterr().err


class _nullcontext:
    value = None

    def __enter__(self) -> _nullcontext:
        return self

    def __exit__(self, *a: object) -> None:
        return None


def test_from_screen_refuses_a_rate_of_another_optimizer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    screen = tmp_path / "adam.json"
    posterior = [{"lr": 1e-3, "weight": 1.0}]
    screen.write_text(
        json.dumps({"screener": "alrao-adam", "switch_posterior": posterior, "preferred_lr": 1e-3})
    )
    assert main(["tune", SPEC, *FAST, "--tuner", "fd2", "--from-screen", str(screen)]) == 1
    err = capsys.readouterr().err
    assert (
        "screened with alrao-adam, whose rates are not SGD rates" in err
        and len(err.strip().splitlines()) == 1
    )
    assert main(["tune", SPEC, *FAST, "--tuner", "ag-adam", "--from-screen", str(screen), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["init_lr"] == pytest.approx(1e-3)


def test_default_tuner_follows_the_promotion_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No --tuner: the service's rule (default_tuner_for) for the screening given, fd2-adam without one."""
    for screener, expected in (("alrao-adam", "fd2-adam"), ("alrao-sgd", "fd2")):
        screen = tmp_path / f"{screener}.json"
        lr = 1e-3 if screener == "alrao-adam" else 0.05
        screen.write_text(json.dumps({"screener": screener, "switch_posterior": [{"lr": lr, "weight": 1.0}]}))
        assert main(["tune", SPEC, *FAST, "--from-screen", str(screen), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["tuner"] == expected and out["init_lr"] == pytest.approx(lr)
    assert main(["tune", SPEC, *FAST, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tuner"] == "fd2-adam" and out["init_lr"] == pytest.approx(1e-3)

"""``archscreen import``: a user's module file becomes a spec file; a refusal is one line, exit 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from archscreen.cli import main
from archscreen.core.data.base import DatasetInfo
from archscreen.core.spec import parse_spec, validate_spec

USER_MODULE = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(torch.relu(self.bn(self.conv(x))), 1))


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 6)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        return self.fc(self.a(x) * torch.sigmoid(x))
"""


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "s2_user_nets.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_import_writes_a_spec_that_validates(user_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = user_dir / "net.yaml"
    code = main(["import", "s2_user_nets:Net", "--input-shape", "1,8,8", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    spec = parse_spec(out)
    assert spec.name == "Net"
    assert [layer.kind for layer in spec.layers] == ["conv2d", "batchnorm", "relu", "flatten"]
    digits = DatasetInfo(name="digits", task="classification", input_shape=(1, 8, 8), num_classes=10)
    assert validate_spec(spec, digits).num_params == 40 + 8 + 2570


def test_refused_module_is_one_line_and_exit_1(user_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["import", "s2_user_nets:Gated", "--input-shape", "6", "-o", str(user_dir / "g.yaml")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and not (user_dir / "g.yaml").exists()
    assert err == "archscreen import: error: mul: no layer kind maps operator mul", err


def test_bad_target_and_shape(user_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", "s2_user_nets:Missing", "--input-shape", "6"]) == 1
    assert "has no attribute 'Missing'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as caught:
        main(["import", "s2_user_nets:Net", "--input-shape", "0,8"])
    assert caught.value.code == 2

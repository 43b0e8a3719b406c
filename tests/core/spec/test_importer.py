"""Importing PyTorch modules as specs: the spec builds a model with the same parameter count and,
with the weights copied, the same outputs; what the DSL cannot express is refused by node."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archscreen.core.spec import build_body, parse_spec, validate_spec
from archscreen.core.spec.importer import ImportRefused, import_module, load_module


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(20, 32)
        self.drop = nn.Dropout(0.1)
        self.fc2 = nn.Linear(32, 16)
        self.out = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(F.relu(self.fc1(x)))
        return self.out(torch.tanh(self.fc2(x)))


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, groups=8), nn.BatchNorm2d(16), nn.GELU(), nn.GroupNorm(4, 16),
        )  # fmt: skip
        self.fc = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.proj = nn.Conv2d(cin, cout, 1, stride=stride) if stride > 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.proj is None:
            y += x  # traced as operator.iadd
        else:
            y = self.proj(x) + y
        return F.relu(y)


class ResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(Block(8, 8, 1), Block(8, 16, 2))
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class GRUClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(6, 12, num_layers=2, batch_first=True)
        self.fc = nn.Linear(12, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(x)
        return self.fc(out[:, -1])


class Transformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 16)
        self.block = nn.TransformerEncoderLayer(
            16, 4, dim_feedforward=32, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.norm = nn.LayerNorm(16)
        self.fc = nn.Linear(9 * 16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(self.block(self.proj(x))).flatten(1))


class CharGRU(nn.Module):
    """A language model on token ids: per-step logits, so the spec fits a language_model dataset."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(30, 8)
        self.gru = nn.GRU(8, 16, batch_first=True)
        self.fc = nn.Linear(16, 30)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.embed(x))
        return self.fc(out)


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(8, 4)
        self.b = nn.Linear(8, 4)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.cat([self.a(x), self.b(x)], dim=1))


CASES = [
    pytest.param(MLP, (20,), id="mlp"),
    pytest.param(CNN, (1, 8, 8), id="cnn-bn"),
    pytest.param(ResNet, (3, 8, 8), id="resnet"),
    pytest.param(GRUClassifier, (7, 6), id="gru"),
    pytest.param(Transformer, (9, 8), id="transformer"),
    pytest.param(CharGRU, (12,), id="char-gru-lm"),
]


@pytest.mark.parametrize(("factory", "shape"), CASES)
def test_imported_spec_reproduces_the_module(factory: type[nn.Module], shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = factory()
    for module in model.modules():  # non-trivial running statistics, so eval-mode BN is tested
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    imported = import_module(model, shape)
    # The spec round-trips through the DSL text and validates on the dataset shape it fits.
    spec = parse_spec(imported.spec.canonical())
    report = validate_spec(spec, imported.info)
    body = build_body(spec, imported.info)
    head = nn.Linear(imported.head.in_features, imported.head.out_features)
    assert report.num_params == sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for p in [*body.parameters(), *head.parameters()]) == report.num_params
    imported.copy_weights(body, head)
    built = nn.Sequential(body, head).eval()
    model.eval()
    tokens = imported.info.input_kind == "tokens"
    x = torch.randint(0, 30, (4, *shape)) if tokens else torch.randn(4, *shape)
    with torch.no_grad():
        torch.testing.assert_close(built(x), model(x), atol=1e-6, rtol=0)


def test_imported_kinds() -> None:
    kinds = [layer.kind for layer in import_module(ResNet(), (3, 8, 8)).spec.layers]
    assert kinds == ["conv2d", "residual", "relu", "residual", "relu", "global_avgpool"]
    residual = import_module(ResNet(), (3, 8, 8)).spec.layers[3]
    assert residual.args()["projection"] == "conv"
    cnn = [layer.kind for layer in import_module(CNN(), (1, 8, 8)).spec.layers]
    assert cnn[4:] == ["conv2d", "batchnorm", "gelu", "groupnorm", "flatten"]
    gru = import_module(GRUClassifier(), (7, 6)).spec.canonical()["layers"]
    assert gru == [{"gru": {"hidden": 12, "layers": 2, "return": "last"}}]
    lm = import_module(CharGRU(), (12,))
    assert (lm.info.task, lm.info.input_kind, lm.info.vocab_size) == ("language_model", "tokens", 30)


@pytest.mark.parametrize(
    ("model", "shape", "message"),
    [
        (Concat(), (8,), "cat: no layer kind maps function torch.cat"),
        (nn.Sequential(nn.Linear(4, 4), nn.PReLU(), nn.Linear(4, 2)), (4,),
         "1: no layer kind maps module PReLU"),
        (nn.Sequential(nn.Linear(4, 4), nn.ReLU()), (4,), "_1: the output must come from an nn.Linear"),
        (nn.Sequential(nn.Conv1d(1, 2, 3, dilation=2), nn.Flatten(), nn.Linear(24, 2)), (1, 16),
         "_0: dilation (2,) is not expressible"),
        (nn.Sequential(nn.GRU(3, 4), nn.Linear(4, 2)), (5, 3),
         "<input>: the module fails on input shape (5, 3)"),
    ],
)  # fmt: skip
def test_refusals_name_the_node_and_the_reason(
    model: nn.Module, shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ImportRefused) as caught:
        import_module(model, shape)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_load_module_instantiates_a_class_and_explains_failures() -> None:
    assert isinstance(load_module(f"{__name__}:MLP"), MLP)
    with pytest.raises(ValueError, match="no attribute 'Nope'"):
        load_module(f"{__name__}:Nope")
    with pytest.raises(ValueError, match=r"expected pkg\.module:Name"):
        load_module("just_a_module")

"""The architecture suites of the fidelity study (``bench/fidelity.py``).

Three offline datasets, 32 architecture/dataset pairs, written in the spec DSL:

* ``mnist1d`` (input ``(1, 40)``): logistic regression, MLPs of several widths,
  depths and activations (a deep sigmoid net that plain SGD barely trains),
  dropout, layer norm, CNNs with and without batch norm, GRUs and LSTMs of 8 to
  64 units (a 1-D residual and a depthwise net were dropped to fit the study in
  two hours on two cores: the recurrent and residual models dominate its cost);
* ``digits`` (input ``(1, 8, 8)``): the same MLP family plus LeNet-5, small
  CNNs, a residual net and a MobileNet-style depthwise net;
* ``chartext`` (tokens ``(64,)``, next-character prediction, scored in bits per
  character): a bigram model, a per-token MLP, GRUs and LSTMs of 8 to 128 units.

``QUICK_SUITE`` is the CI-sized ten-architecture ``mnist1d`` subset.
"""

from __future__ import annotations

from typing import Any

from archscreen.core.defaults import MEASURED_MAX_EPOCHS

FLAT: list[Any] = ["flatten"]


def _mlp_family() -> dict[str, dict[str, Any]]:
    return {
        "logreg": {"layers": FLAT},
        "mlp-narrow": {"layers": [*FLAT, {"linear": 16}, "relu"]},
        "mlp-wide": {"layers": [*FLAT, {"linear": 256}, "relu", {"linear": 256}, "relu"]},
        "mlp-tanh-deep": {"layers": [*FLAT, *([{"linear": 64}, "tanh"] * 4)]},
        "mlp-sigmoid-deep": {"layers": [*FLAT, *([{"linear": 64}, "sigmoid"] * 4)]},
        "mlp-dropout": {
            "layers": [*FLAT, {"linear": 128}, "relu", {"dropout": 0.3}, {"linear": 128}, "relu"]
        },
    }


def _conv1d(out: int, kernel: int = 5, **kw: Any) -> dict[str, Any]:
    return {"conv1d": {"out": out, "kernel": kernel, "padding": kernel // 2, **kw}}


def _conv2d(out: int, kernel: int = 3, **kw: Any) -> dict[str, Any]:
    return {"conv2d": {"out": out, "kernel": kernel, "padding": kernel // 2, **kw}}


def _seq(kind: str, hidden: int) -> dict[str, Any]:
    """A recurrent classifier over MNIST-1D's 40 positions (last hidden state)."""
    return {"layers": [{"permute": [1, 0]}, {kind: {"hidden": hidden, "return": "last"}}]}


CNN_1D = [
    _conv1d(16),
    "relu",
    {"maxpool1d": 2},
    _conv1d(32),
    "relu",
    {"maxpool1d": 2},
    "flatten",
    {"linear": 64},
    "relu",
]
CNN_BN_1D = [
    _conv1d(16), "batchnorm", "relu", {"maxpool1d": 2},
    _conv1d(32), "batchnorm", "relu", {"maxpool1d": 2},
    "flatten", {"linear": 64}, "relu",
]  # fmt: skip

QUICK_SUITE: dict[str, dict[str, Any]] = {
    **_mlp_family(),
    "cnn": {"layers": CNN_1D},
    "cnn-bn": {"layers": CNN_BN_1D},
    "gru-16": _seq("gru", 16),
    "gru-64": _seq("gru", 64),
}

MNIST1D_SUITE: dict[str, dict[str, Any]] = {
    **QUICK_SUITE,
    "mlp-gelu-ln": {
        "layers": [*FLAT, {"linear": 128}, "layernorm", "gelu", {"linear": 128}, "layernorm", "gelu"]
    },
    "lstm-8": _seq("lstm", 8),
    "lstm-32": _seq("lstm", 32),
}

DIGITS_SUITE: dict[str, dict[str, Any]] = {
    **_mlp_family(),
    "lenet5": {
        "layers": [
            _conv2d(6, 5),
            "tanh",
            {"avgpool2d": 2},
            _conv2d(16, 5),
            "tanh",
            {"avgpool2d": 2},
            "flatten",
            {"linear": 120},
            "tanh",
            {"linear": 84},
            "tanh",
        ]
    },
    "cnn": {"layers": [_conv2d(16), "relu", {"maxpool2d": 2}, _conv2d(32), "relu", "global_avgpool"]},
    "cnn-bn": {
        "layers": [
            _conv2d(16),
            "batchnorm",
            "relu",
            {"maxpool2d": 2},
            _conv2d(32),
            "batchnorm",
            "relu",
            "global_avgpool",
        ]
    },
    "cnn-elu-wide": {"layers": [_conv2d(64), "elu", {"maxpool2d": 2}, "flatten", {"linear": 128}, "elu"]},
    "resnet": {
        "layers": [
            _conv2d(16),
            "batchnorm",
            "relu",
            {"residual": {"layers": [_conv2d(16), "batchnorm", "relu", _conv2d(16), "batchnorm"]}},
            "relu",
            {
                "residual": {
                    "projection": "auto",
                    "layers": [_conv2d(32, stride=2), "batchnorm", "relu", _conv2d(32), "batchnorm"],
                }
            },
            "relu",
            "global_avgpool",
        ]
    },
    "mobilenet": {
        "layers": [
            _conv2d(16),
            "batchnorm",
            "relu",
            _conv2d(16, groups=16),
            "batchnorm",
            "relu",
            {"conv2d": {"out": 32, "kernel": 1}},
            "batchnorm",
            "relu",
            _conv2d(32, stride=2, groups=32),
            "batchnorm",
            "relu",
            {"conv2d": {"out": 64, "kernel": 1}},
            "batchnorm",
            "relu",
            "global_avgpool",
            {"dropout": 0.1},
        ]
    },
}


def _lm(kind: str, hidden: int) -> dict[str, Any]:
    return {"layers": [{"embedding": 32}, {kind: {"hidden": hidden, "return": "sequence"}}]}


CHARTEXT_SUITE: dict[str, dict[str, Any]] = {
    "bigram": {"layers": [{"embedding": 32}]},
    "token-mlp": {"layers": [{"embedding": 32}, {"linear": 128}, "relu"]},
    "gru-8": _lm("gru", 8),
    "gru-32": _lm("gru", 32),
    "lstm-8": _lm("lstm", 8),
    "lstm-32": _lm("lstm", 32),
    "lstm-128": _lm("lstm", 128),
}

FULL_SUITES: dict[str, dict[str, dict[str, Any]]] = {
    "digits": DIGITS_SUITE,
    "chartext": CHARTEXT_SUITE,
    "mnist1d": MNIST1D_SUITE,
}

# Ground-truth grids. SGD: 8 log-spaced rates; the language models' best SGD rates sit
# higher (the Alrao paper's char-LSTM range reaches 100), so their grid is shifted up.
# On digits the best rate of logistic regression and of the batch-norm CNN sat at the top of
# both grids in the first pass, so its grids reach one step further (9 and 7 rates).
SGD_LRS: dict[str, list[float]] = {
    "default": [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0],
    "digits": [1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0],
    "chartext": [1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0],
}
ADAM_LRS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
# The small character models' best Adam rate sat at 3e-2 in a first pass: their grid reaches 0.1 too.
ADAM_LRS_BY_DATASET: dict[str, list[float]] = {"digits": [*ADAM_LRS, 0.1], "chartext": [*ADAM_LRS, 0.1]}
QUICK_SGD_LRS = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0]

# Budget per dataset: enough epochs that the best rate's best epoch is not at the cap
# (fidelity.py reports it when it is). On chartext 25 epochs leave the best Adam rate of
# five of the seven models still improving at the cap; the study reruns chartext's truths and
# the main screeners with ``--budget chartext:max_epochs=50,patience=5`` to check whether that
# changes the conclusions (docs/fidelity.md). MNIST-1D takes minibatches of 64 to halve the
# recurrent models' sequential steps, the study's largest cost on two cores.
# The caps are read from core/defaults.py (MEASURED_MAX_EPOCHS): the budget study (issue 27) chose
# these very caps as the product's per-dataset default, so they are defined there, once.
BUDGETS: dict[str, dict[str, int]] = {
    "digits": {"max_epochs": MEASURED_MAX_EPOCHS["digits"], "patience": 8, "batch_size": 32},
    "chartext": {"max_epochs": MEASURED_MAX_EPOCHS["chartext"], "patience": 4, "batch_size": 32},
    "mnist1d": {"max_epochs": MEASURED_MAX_EPOCHS["mnist1d"], "patience": 5, "batch_size": 64},
}


# ---------------------------------------------------------------- fidelity study II (held out)
#
# Written on 2026-12-02, after the defaults (DEFAULT_SCREENER in fidelity.py, patience, ranges)
# were frozen: no default is chosen on these. They target the first study's misses: wide-and-
# shallow against deep-and-narrow pairs, saturating activations (deep sigmoid and tanh nets), a
# narrow CNN, a regression task, and transformers on chartext (added when the DSL has them).


def _stack(width: int, act: str, depth: int) -> list[Any]:
    return [item for _ in range(depth) for item in ({"linear": width}, act)]


HELDOUT_SUITES: dict[str, dict[str, dict[str, Any]]] = {
    "digits": {
        "h-mlp-wide-shallow": {"layers": [*FLAT, {"linear": 1024}, "relu"]},
        "h-mlp-deep-narrow": {"layers": [*FLAT, *_stack(24, "relu", 6)]},
        "h-mlp-sigmoid-deep6": {"layers": [*FLAT, *_stack(64, "sigmoid", 6)]},
        "h-cnn-8ch": {"layers": [_conv2d(8), "relu", {"maxpool2d": 2}, _conv2d(8), "relu", "global_avgpool"]},
    },
    "mnist1d": {
        "h-mlp-wide-shallow": {"layers": [*FLAT, {"linear": 1024}, "relu"]},
        "h-mlp-deep-narrow": {"layers": [*FLAT, *_stack(32, "relu", 6)]},
        "h-mlp-tanh-deep6": {"layers": [*FLAT, *_stack(64, "tanh", 6)]},
        "h-mlp-sigmoid-deep6": {"layers": [*FLAT, *_stack(64, "sigmoid", 6)]},
        "h-cnn-wide-shallow": {"layers": [_conv1d(64, 9), "relu", {"maxpool1d": 4}, "flatten"]},
    },
    "regression": {
        "h-linear": {"layers": [*FLAT]},
        "h-mlp-wide-shallow": {"layers": [{"linear": 512}, "relu"]},
        "h-mlp-deep-narrow": {"layers": _stack(24, "relu", 6)},
        "h-mlp-sigmoid-deep5": {"layers": _stack(64, "sigmoid", 5)},
        "h-mlp-tanh-deep4": {"layers": _stack(64, "tanh", 4)},
        "h-mlp-gelu-ln": {
            "layers": [{"linear": 128}, "layernorm", "gelu", {"linear": 128}, "layernorm", "gelu"]
        },
    },
    # Transformers (the DSL's attention layers): one and two pre-LN blocks, causal on a language
    # model. fidelity.py drops them, saying so, while the installed DSL does not parse them.
    "chartext": {
        "h-transformer-1": {
            "layers": [{"embedding": 32}, "positional", {"transformer_block": {"heads": 2, "dim": 32}}]
        },
        "h-transformer-2": {
            "layers": [
                {"embedding": 32},
                "positional",
                {"transformer_block": {"heads": 4, "dim": 32}},
                {"transformer_block": {"heads": 4, "dim": 32}},
            ]
        },
    },
}
BUDGETS["regression"] = {"max_epochs": MEASURED_MAX_EPOCHS["regression"], "patience": 8, "batch_size": 32}

# The held-out split of the first study's 32 pairs: a fixed seeded hash, chosen before looking at
# which pair lands where. Defaults may be chosen on the selection half only; the report half
# reports. (The first study chose its defaults on all 32, so its report half is not truly held
# out: docs/fidelity.md reports it apart from the new architectures.)
SPLIT_SEED = 17  # the issue number


def split_of(dataset: str, arch: str) -> str:
    """``selection`` or ``report``: the parity of sha256("SEED/dataset/arch")'s last byte."""
    import hashlib

    digest = hashlib.sha256(f"{SPLIT_SEED}/{dataset}/{arch}".encode()).digest()
    return "report" if digest[-1] % 2 else "selection"

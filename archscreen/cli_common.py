"""What every ``archscreen`` command module shares: exit codes, :class:`CliError`, the parser class
and argument types.

:mod:`archscreen.cli` (local commands and ``main``), :mod:`archscreen.service_cli` and
:mod:`archscreen.remote_cli` all import from here and never from each other, so there is no
import cycle between them: ``cli`` imports the other two to register their subcommands.
"""

from __future__ import annotations

import argparse
import math
from typing import NoReturn

__all__ = [
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "Parser",
    "positive_float",
    "positive_int",
    "rate_list",
]

# 1 for an invalid spec or dataset, 2 for a usage error (argparse's convention).
EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A user-facing error: printed as one line, exit code attached."""

    def __init__(self, message: str, code: int = EXIT_INVALID) -> None:
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus a pointer to --help), not the usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def rate_list(text: str) -> list[float]:
    rates = [positive_float(t.strip()) for t in text.split(",") if t.strip()]
    if not rates:
        raise argparse.ArgumentTypeError("expected a comma-separated list of rates, e.g. 0.001,0.01,0.1")
    return rates

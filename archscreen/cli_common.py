"""What every ``archscreen`` command module shares: exit codes, :class:`CliError`, the parser class
and argument types.

:mod:`archscreen.cli` (local commands and ``main``), :mod:`archscreen.service_cli` and
:mod:`archscreen.remote_cli` all import from here and never from each other, so there is no
import cycle between them: ``cli`` imports the other two to register their subcommands.
"""

from __future__ import annotations

import argparse
import math
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, NoReturn, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

__all__ = [
    "EXIT_INVALID",
    "EXIT_OK",
    "EXIT_USAGE",
    "CliError",
    "Parser",
    "add_model_options",
    "model_from_args",
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


# --------------------------------------------------------------------- flags generated from a model


def option_flag(field: str) -> str:
    """The flag of a model field: ``max_epochs`` -> ``--max-epochs``."""
    return "--" + field.replace("_", "-")


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _number(kind: type) -> Callable[[str], Any]:
    """int or float from text, refusing inf/NaN; the model's bounds are checked by the model."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _number_or_word(kind: type, words: tuple[str, ...]) -> Callable[[str], Any]:
    """A number, or one of ``words`` (``--max-epochs auto``)."""
    number = _number(kind)

    def parse(text: str) -> Any:
        if text in words:
            return text
        try:
            return number(text)
        except argparse.ArgumentTypeError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what} or {'/'.join(words)}, got {text!r}") from None

    parse.__name__ = kind.__name__
    return parse


def _argparse_kind(annotation: Any) -> dict[str, Any]:
    """``type``/``choices``/``action`` for a field's annotation (``X | None`` reads as ``X``; a
    number or a ``Literal`` word, ``int | Literal["auto"]``, takes either)."""
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        words = tuple(w for a in members if get_origin(a) is Literal for w in get_args(a))
        numbers = [a for a in members if a in (int, float)]
        if words and numbers:
            return {"type": _number_or_word(numbers[0], words), "metavar": "|".join(["N", *words])}
        annotation = members[0]
    if get_origin(annotation) is Literal:
        return {"choices": list(get_args(annotation))}
    if get_origin(annotation) is list:
        return {"type": _int_list, "metavar": "N,N"}
    if annotation is bool:
        return {"action": argparse.BooleanOptionalAction}
    if annotation in (int, float):
        return {"type": _number(annotation)}
    return {"type": str}


def _field_default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return None if info.default is PydanticUndefined else info.default


def add_model_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    model: type[BaseModel],
    *,
    exclude: Iterable[str] = (),
    aliases: Mapping[str, str] | None = None,
    service_defaults: bool = False,
) -> None:
    """One ``--flag`` per field of ``model``: type and choices from its annotation, help from its
    description, the default from the model (so a new field is a new flag, and a flag's default is
    never typed twice).

    ``service_defaults``: a flag left out is not sent (``None``) and the help names the service's
    default, for commands that send the options to the service (whose model fills them in).
    ``aliases``: an older flag name kept for a field (``{"num_copies": "--copies"}``).
    Read the values back with :func:`model_from_args`.
    """
    skip = set(exclude)
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        default = _field_default(info)
        flags = [option_flag(name), *([aliases[name]] if aliases and name in aliases else [])]
        parser.add_argument(
            *flags,
            dest=name,
            default=None if service_defaults else default,
            help=_help_text(name, info, default, service_defaults),
            **_argparse_kind(info.annotation),
        )


def _help_text(name: str, info: FieldInfo, default: Any, service_defaults: bool) -> str:
    """The field's description and its default (``none`` for an unset optional field, unless the
    description says what its default is)."""
    text = (info.description or name.replace("_", " ")).replace("%", "%%")
    if default is None and "default" in text:
        return text
    shown = ",".join(map(str, default)) if isinstance(default, list) else default
    shown = "none" if default is None else shown
    return f"{text} ({'service default' if service_defaults else 'default'}: {shown})"


def model_from_args(
    model: type[BaseModel], args: argparse.Namespace, *, exclude: Iterable[str] = (), only_given: bool = False
) -> BaseModel:
    """The ``model`` the flags of :func:`add_model_options` describe; a value the model refuses is
    a :class:`CliError` (exit 2) naming the flag. ``only_given``: leave out flags left at ``None``."""
    skip = set(exclude)
    values = {
        name: getattr(args, name)
        for name in model.model_fields
        if name not in skip and hasattr(args, name) and not (only_given and getattr(args, name) is None)
    }
    try:
        return model(**values)
    except ValidationError as exc:
        raise CliError(_first_error(exc, model), EXIT_USAGE) from None


def _first_error(exc: ValidationError, model: type[BaseModel]) -> str:
    """``--max-epochs: Input should be greater than or equal to 1``; a rule across fields names
    the flags of the fields its message mentions (``--lr-min/--lr-max: lr_min must be ...``)."""
    err = exc.errors()[0]
    message = str(err["msg"]).removeprefix("Value error, ")
    if err["loc"]:
        return f"{option_flag(str(err['loc'][0]))}: {message}"
    named = [option_flag(n) for n in model.model_fields if n in message.split()]
    return f"{'/'.join(named)}: {message}" if named else message

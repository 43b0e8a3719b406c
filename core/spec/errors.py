"""Spec errors: every problem is a ``path: message`` line.

Paths name the offending place in the user's spec, e.g. ``layers[2].linear.out`` or
``layers[3].residual.layers[1].conv2d.kernel``; ``spec`` names the whole document
and ``head``/``layers``/``name`` the top-level fields.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

# Values quoted in error messages: a bounded preview, whatever the value's size or sharing.
_preview = reprlib.Repr()
_preview.maxstring = 60
_preview.maxother = 60
_preview.maxlist = _preview.maxtuple = _preview.maxdict = _preview.maxset = 6
_preview.maxlevel = 3


def preview(value: Any) -> str:
    """``repr(value)`` cut to a short prefix: an error message never echoes a whole input."""
    text = _preview.repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


@dataclass(frozen=True)
class SpecIssue:
    """One problem in a spec: where (``path``) and what (``message``, one line)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class SpecError(ValueError):
    """An invalid spec. ``issues`` lists every problem found, in spec order.

    ``str(err)`` is one ``path: message`` line per issue, so it can be shown to a
    user verbatim (CLI, API response) without a traceback.
    """

    issues: list[SpecIssue]

    def __init__(self, issues: Iterable[SpecIssue]) -> None:
        self.issues = list(issues)
        if not self.issues:
            raise ValueError("SpecError needs at least one issue")
        # args carries the issues so the exception pickles (worker processes) intact.
        super().__init__(self.issues)

    @classmethod
    def single(cls, path: str, message: str) -> SpecError:
        """An error with exactly one issue."""
        return cls([SpecIssue(path, message)])

    def as_dicts(self) -> list[dict[str, str]]:
        """The issues as JSON-ready ``{"path": ..., "message": ...}`` dicts."""
        return [asdict(issue) for issue in self.issues]

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)

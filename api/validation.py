"""The validation sandbox: an uploaded file is read only in a child process under limits.

The child (``python -m archscreen.core.data.check``) runs with an address-space limit
(``RLIMIT_AS`` = ``ARCHSCREEN_DATASET_CHECK_MEMORY_BYTES``), a CPU-time limit and a wall-clock
timeout (``ARCHSCREEN_DATASET_CHECK_TIMEOUT_S``), one thread for OpenMP and Arrow, and Arrow's
system allocator (its default pools reserve address space ahead of use, which the limit counts).
At most ``ARCHSCREEN_MAX_CONCURRENT_VALIDATIONS`` children run on a host (:mod:`.limits`), so
together they stay under that count times the limit.

The parent reaps the child with ``wait4``, which also gives the child's peak resident set: each
validation logs it, and tests assert on it.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archscreen.api.errors import ApiValidationError, item
from archscreen.api.limits import LimitExceeded
from archscreen.core.table_options import TableOptions
from archscreen.settings import Settings

log = logging.getLogger("archscreen.api")
# core/data/check.py's exit statuses (not imported: that would import torch into the API process;
# tests/api/test_datasets.py checks they agree)
EXIT_INVALID, EXIT_TOO_LARGE, EXIT_OUT_OF_MEMORY = 2, 3, 4
_POLL_S = 0.02


@dataclass(frozen=True)
class ChildOutcome:
    returncode: int  # negative: killed by that signal
    stdout: str
    stderr: str
    peak_rss_bytes: int
    seconds: float
    timed_out: bool


def _limit_child(memory_bytes: int, cpu_s: int) -> None:
    """In the validation child, before exec: bounded address space and CPU time."""
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 5))


def run_limited(cmd: list[str], work: Path, *, memory_bytes: int, timeout_s: float) -> ChildOutcome:
    """Run ``cmd`` under the limits; output goes through files in ``work`` (no pipe to drain)."""
    out_path, err_path = work / "check.out", work / "check.err"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ARROW_DEFAULT_MEMORY_POOL": "system"}
    t0 = time.monotonic()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=lambda: _limit_child(memory_bytes, max(1, int(timeout_s))),
        )
    timed_out = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - t0 > timeout_s:
            timed_out = True
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(_POLL_S)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    return ChildOutcome(
        returncode=proc.returncode,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
        peak_rss_bytes=usage.ru_maxrss * 1024,  # Linux reports kilobytes
        seconds=time.monotonic() - t0,
        timed_out=timed_out,
    )


def check_command(
    src: Path,
    fmt: str,
    label_column: str | None,
    out: Path,
    settings: Settings,
    options: TableOptions | None = None,
    image_args: Sequence[str] = (),
) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "archscreen.core.data.check",
        str(src),
        "--format",
        fmt,
        "--out",
        str(out),
        "--max-bytes",
        str(settings.max_dataset_unpacked_bytes),
    ]
    cmd += ["--label-column", label_column] if label_column else []
    return cmd + option_flags(options) + list(image_args)


def option_flags(options: TableOptions | None) -> list[str]:
    """The validation child's flags for a table's preprocessing options."""
    if options is None:
        return []
    flags = ["--max-categories", str(options.max_categories)]
    flags += [] if options.standardize else ["--no-standardize"]
    # NAME=value form: a column name that starts with "-" is not taken for a flag
    flags += [f"--categorical-column={name}" for name in options.categorical_columns]
    return flags


def check_file(
    src: Path,
    fmt: str,
    label_column: str | None,
    out: Path,
    settings: Settings,
    options: TableOptions | None = None,
    image_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Validate ``src`` in the sandbox: its facts, or :class:`ApiValidationError` (422) /
    :class:`LimitExceeded` (413, a table over ``ARCHSCREEN_MAX_DATASET_UNPACKED_BYTES``)."""
    outcome = run_limited(
        check_command(src, fmt, label_column, out, settings, options, image_args),
        src.parent,
        memory_bytes=settings.dataset_check_memory_bytes,
        timeout_s=settings.dataset_check_timeout_s,
    )
    log.info(
        "validated a %s upload: exit %d in %.1f s, child peak RSS %.0f MB",
        fmt,
        outcome.returncode,
        outcome.seconds,
        outcome.peak_rss_bytes / 2**20,
    )
    return facts_or_error(outcome, settings)


def facts_or_error(outcome: ChildOutcome, settings: Settings) -> dict[str, Any]:
    last_err = outcome.stderr.strip().splitlines()[-1] if outcome.stderr.strip() else ""
    if outcome.timed_out:
        raise ApiValidationError(
            [item(["body"], f"validating the file took over {settings.dataset_check_timeout_s:.0f} s")]
        )
    if outcome.returncode == EXIT_TOO_LARGE:
        refused = _json_line(outcome.stderr) or {
            "detail": "the table is over a size limit",
            "limit": settings.max_dataset_unpacked_bytes,
            "current": None,
        }
        raise LimitExceeded(
            413,
            f"{refused['detail']} (ARCHSCREEN_MAX_DATASET_UNPACKED_BYTES)"
            if refused["limit"] == settings.max_dataset_unpacked_bytes
            else refused["detail"],
            refused["limit"],
            refused["current"],
        )
    if outcome.returncode == EXIT_INVALID:
        raise ApiValidationError([item(["body"], last_err or "invalid")])
    if outcome.returncode != 0:
        # out of memory (a MemoryError, or killed inside native code), SIGXCPU, SIGKILL:
        # a bad file all the same, named by the limits it ran into
        why = "memory" if outcome.returncode == EXIT_OUT_OF_MEMORY else "memory and time"
        raise ApiValidationError(
            [
                item(
                    ["body"],
                    f"the file could not be validated within the {why} limits "
                    f"({settings.dataset_check_memory_bytes:,} bytes, ARCHSCREEN_DATASET_CHECK_MEMORY_BYTES; "
                    f"{settings.dataset_check_timeout_s:.0f} s, ARCHSCREEN_DATASET_CHECK_TIMEOUT_S)",
                )
            ]
        )
    facts: dict[str, Any] = json.loads(outcome.stdout.strip().splitlines()[-1])
    return facts


def _json_line(text: str) -> dict[str, Any] | None:
    """The last line of ``text`` that is a JSON object (the child may warn after it)."""
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None

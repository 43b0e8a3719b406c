"""``archscreen promote STUDY [--top K | --candidates NAME ...]``: tuning jobs for a study's best
screened candidates, through ``POST /api/v1/studies/{id}/promote`` (the rule is the server's,
``worker/promotion.py``). ``archscreen submit --promote top-K`` makes a new study promote itself
(``policy.auto``) once every screening run has ended.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from archscreen.api.schemas import JobOut, StudyOut
from archscreen.cli_common import EXIT_OK, CliError
from archscreen.client import ApiError, Client
from archscreen.core.names import TUNER_NAMES

PROMOTE_PATTERN = re.compile(r"^top-([1-9][0-9]?|100)$")


def promote_command(study: str, top_k: int | None = None) -> str:
    """The command that promotes ``study`` (named by error messages that need a promotion)."""
    return f"archscreen promote {study}" + (f" --top {top_k}" if top_k else "")


def parse_promote(value: str) -> int:
    """``top-K`` -> K (1 to 100); argparse's ``type`` for ``submit --promote``."""
    match = PROMOTE_PATTERN.match(value)
    if match is None:
        raise argparse.ArgumentTypeError(f"expected top-K with K from 1 to 100, e.g. top-2; got {value!r}")
    return int(match.group(1))


def add_promote_commands(sub: Any) -> None:
    from archscreen.remote_cli import _server_args

    p = sub.add_parser(
        "promote",
        help="tune a study's best screened candidates (the top K, or the candidates named)",
        description="Create tuning jobs for the study's top K by its ranking metric (default: the "
        "policy's top_k), or for the candidates given by name or id. Promoting a candidate again "
        "keeps its existing jobs. Then `archscreen status STUDY` and `archscreen export STUDY`.",
    )
    p.add_argument("study", help="study name or id")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--top", type=int, metavar="K", help="the top K of the ranking (1 to 100)")
    which.add_argument("--candidates", nargs="+", metavar="NAME", help="candidate names or ids")
    p.add_argument("--tuner", choices=TUNER_NAMES, help="default: the study's policy")
    p.add_argument("--starts", type=int, help="tuning jobs per candidate (default: the study's policy)")
    _server_args(p)
    p.set_defaults(func=cmd_promote)


def candidate_ids(c: Client, study: StudyOut, wanted: list[str]) -> list[int]:
    """Ids of the candidates named (by name or id); a readable error for one the study lacks."""
    cands = c.candidates(study.id)
    by_name = {x.name: x.id for x in cands}
    ids = {x.id for x in cands}
    out = []
    for value in (v for w in wanted for v in w.split(",") if v):
        if value in by_name:
            out.append(by_name[value])
        elif value.isdigit() and int(value) in ids:
            out.append(int(value))
        else:
            shown = ", ".join(sorted(by_name)[:10]) or "none"
            raise CliError(f"study {study.name!r} has no candidate {value!r} (candidates: {shown})")
    return out


def promote(c: Client, study: StudyOut, args: argparse.Namespace) -> list[JobOut]:
    """The study's promoted tuning jobs (new and existing) for ``args.top`` / ``args.candidates``."""
    if args.top is not None and not 1 <= args.top <= 100:
        raise CliError(f"--top must be from 1 to 100, got {args.top}")
    top = None if args.candidates else (args.top or study.policy.top_k)
    ids = candidate_ids(c, study, args.candidates) if args.candidates else None
    try:
        return c.promote(study.id, top_k=top, candidate_ids=ids, tuner=args.tuner, starts=args.starts)
    except ApiError as exc:
        raise CliError(f"study {study.name!r}: {exc}") from None


def cmd_promote(args: argparse.Namespace) -> int:
    from archscreen.remote_cli import _client, _token

    with _client(args.server, _token(args)) as c:
        study = c.study(int(args.study)) if args.study.isdigit() else c.study_by_name(args.study)
        if study is None:
            raise CliError(f"no study named {args.study!r}")
        jobs = promote(c, study, args)
        names = {x.id: x.name for x in c.candidates(study.id)}
    for job in jobs:
        print(f"{names.get(job.candidate_id, '?')}: tuning job {job.id} ({job.state})")
    print(f"then: archscreen status {study.name}; archscreen export {study.name}")
    return EXIT_OK

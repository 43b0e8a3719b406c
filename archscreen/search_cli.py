"""``archscreen search SPACE.yaml --dataset D --trials N``: a search study on a running service
(issue 29). Optuna, in the service, asks the trials; each is screened as a candidate; when all are
told the study promotes its best (``policy.auto``)."""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from archscreen.api.schemas import SearchOut
from archscreen.cli_common import EXIT_OK, EXIT_USAGE, CliError
from archscreen.client import ApiError, Client, format_detail
from archscreen.config import SearchConfig

POLL_S = 2.0


def add_search_command(sub: Any) -> None:
    from archscreen.remote_cli import _server_args

    defaults = SearchConfig.model_validate({})
    p = sub.add_parser("search", help="search a space on a running service (Optuna asks, archscreen screens)")
    p.add_argument("space", help="search space file (YAML); see docs/spec.md, Search spaces")
    p.add_argument("--dataset", required=True, help="a built-in dataset name or ds_<id>")
    p.add_argument(
        "--trials",
        type=int,
        default=None,
        help=f"trials in all (default {defaults.trials}; with --budget, until the budget is spent)",
    )
    p.add_argument("--parallel", type=int, default=defaults.parallel, help="trials screening at once")
    p.add_argument("--sampler", choices=["tpe", "random", "grid", "nsga2"], default=defaults.sampler)
    p.add_argument(
        "--objectives",
        default=None,
        help="comma-separated, minimised: val_loss (default); with --sampler nsga2 val_loss,params (default) "
        "or val_loss,latency",
    )
    p.add_argument("--budget", type=float, default=None, help="CPU-seconds the study may spend (no budget)")
    p.add_argument("--seed", type=int, default=None, help="the sampler's seed")
    p.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="screening epochs per trial (default: the dataset's measured cap, the service's auto)",
    )
    p.add_argument(
        "--no-asha", action="store_true", help="one full run per trial (default: ASHA stops poor ones early)"
    )
    p.add_argument("--reduction-factor", type=int, default=None, help="ASHA's η (default 3)")
    p.add_argument("--min-epochs", type=int, default=None, help="ASHA's first rung in epochs (default 1)")
    p.add_argument("--name", help="study name (default: search-<random>)")
    p.add_argument("--wait", action="store_true", help="wait until every trial is told, with progress")
    _server_args(p)
    p.set_defaults(func=cmd_search)


def cmd_search(args: argparse.Namespace) -> int:
    from archscreen.remote_cli import _client, _token

    path = Path(args.space)
    if not path.is_file():
        raise CliError(f"{path}: no such file", EXIT_USAGE)
    search: dict[str, Any] = {"sampler": args.sampler, "parallel": args.parallel, "seed": args.seed}
    if args.trials is not None:
        search["trials"] = args.trials
    elif args.budget is None:
        search["trials"] = SearchConfig.model_validate({}).trials
    asha = {"reduction_factor": args.reduction_factor, "min_epochs": args.min_epochs}
    search["asha"] = {"enabled": not args.no_asha, **{k: v for k, v in asha.items() if v is not None}}
    if args.objectives:
        search["objectives"] = [o.strip() for o in args.objectives.split(",")]
    elif args.sampler == "nsga2":
        search["objectives"] = ["val_loss", "params"]
    if args.budget is not None:
        search["budget_cpu_s"] = args.budget
    screening = {"max_epochs": args.max_epochs} if args.max_epochs else None
    with _client(args.server, _token(args)) as client:
        try:
            study = client.create_search(
                args.name or f"search-{uuid.uuid4().hex[:8]}",
                dataset=args.dataset,
                space=path.read_text(),
                search=search,
                screening=screening,
                policy={"auto": True},
            )
        except ApiError as exc:
            raise CliError(f"{path}: {format_detail(exc.detail)}") from None
        planned = study.search.trials if study.search is not None else args.trials
        until = f" (or until {args.budget:g} CPU-seconds)" if args.budget is not None else ""
        print(f"study {study.id} ({study.name}): searching {planned} trials of {path.name}{until}")
        if args.wait:
            s = _wait(client, study.id)
            print(progress_line(s))
            print(best_line(s))
    return EXIT_OK


def progress_line(s: SearchOut) -> str:
    """One line of a search's progress, as ``archscreen status`` and ``search --wait`` print it."""
    budget = f" of {s.budget_cpu_s:g} budget" if s.budget_cpu_s is not None else ""
    best = "none yet" if s.best_value is None else f"{s.best_value:.4g}"
    return (
        f"trials asked {s.asked}/{s.trials}, told {s.told}, running {s.running}, pruned {s.pruned}"
        f"{f', failed {s.failed}' if s.failed else ''}; best val_loss {best}; "
        f"CPU-seconds {s.cpu_seconds:.1f}{budget}"
    )


def best_line(s: SearchOut) -> str:
    if s.best_value is None:
        return "best: no trial has a score yet"
    params = ", ".join(f"{k}={v}" for k, v in sorted((s.best_params or {}).items()))
    return f"best: val_loss {s.best_value:.4g} with {params or 'no parameters'}"


def _wait(client: Client, study_id: int) -> SearchOut:
    """The search's progress once it is done (printed to stderr as it changes: counts and best at
    once, the CPU-seconds at most every 10 s)."""
    last: list[Any] = [None, 0.0]

    def show(s: SearchOut) -> None:
        key = (s.asked, s.told, s.running, s.pruned, s.failed, s.best_value)
        if key != last[0] or time.monotonic() - last[1] > 10:
            print(progress_line(s), file=sys.stderr, flush=True)
            last[:] = [key, time.monotonic()]

    try:
        done = client.wait_search(study_id, poll_s=POLL_S, on_update=show)
    except ValueError as exc:  # the study was made by create_search, so it has one
        raise CliError(str(exc)) from None
    assert done.search is not None
    return done.search

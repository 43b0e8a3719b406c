"""``archscreen validate SPACE.yaml --dataset D``: a search space's size and a seeded sample's validity.

:mod:`archscreen.cli` calls :func:`add_space_flags` on its ``validate`` parser and hands a document
with a top-level ``space:`` key to :func:`cmd_validate_space`; plain specs never reach this module.
Imports of core and Optuna are lazy, so the CLI starts as fast as before.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from archscreen.cli_common import EXIT_OK, CliError, positive_int

DEFAULT_SAMPLES = 20


def add_space_flags(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``validate`` flags that only search spaces use; returns ``parser``."""
    parser.add_argument(
        "--samples",
        type=positive_int,
        default=DEFAULT_SAMPLES,
        help=f"search spaces: points to sample and check (default {DEFAULT_SAMPLES})",
    )
    parser.add_argument("--seed", type=int, default=0, help="search spaces: the sampler's seed (default 0)")
    return parser


def is_space_file(spec_path: str) -> bool:
    """True when the file is a search space (a top-level ``space:`` key). A file that does not load
    is not a space: the plain-spec path reports its error as before."""
    from archscreen.core.spec import SpecError
    from archscreen.core.spec.space import is_space_document, load_space_document

    try:
        return is_space_document(load_space_document(Path(spec_path)))
    except SpecError:
        return False


def load_space(spec_path: str) -> Any:
    """Parse a space file; its syntax errors become one ``FILE: path: message`` line per issue."""
    from archscreen.core.spec import SpecError
    from archscreen.core.spec.space import parse_space

    try:
        return parse_space(Path(spec_path))
    except SpecError as exc:
        raise CliError("\n".join(f"{spec_path}: {issue}" for issue in exc.issues)) from None


def cmd_validate_space(args: argparse.Namespace) -> int:
    from archscreen.core.data import DatasetError, load_dataset
    from archscreen.core.spec.space import survey_space

    space = load_space(args.spec)
    try:
        info = load_dataset(args.dataset).info
    except DatasetError as exc:
        raise CliError(f"--dataset: {exc}") from None
    survey = survey_space(space, info, samples=args.samples, seed=args.seed)
    if args.json:
        print(json.dumps(_survey_dict(space, info.name, survey)))
    else:
        _print_survey(space, info.name, survey)
    if survey.valid == 0:
        raise CliError(f"{args.spec}: none of {survey.samples} sampled points is valid on {info.name}")
    return EXIT_OK


def _size_text(survey: Any) -> str:
    if survey.continuous:
        return f"continuous (its discrete part: {survey.size:,} points)"
    return f"{survey.size:,} points"


def _survey_dict(space: Any, dataset: str, survey: Any) -> dict[str, Any]:
    return {
        "space": True,
        "name": space.name,
        "dataset": dataset,
        "parameters": sorted(space.params),
        "size": survey.size,
        "continuous": survey.continuous,
        "samples": survey.samples,
        "seed": survey.seed,
        "valid": survey.valid,
        "refused": [{"reason": reason, "count": n} for reason, n in survey.refusals.items()],
        "num_params": list(survey.num_params) if survey.num_params else None,
    }


def _print_survey(space: Any, dataset: str, survey: Any) -> None:
    print(f"{space.name} on {dataset}: search space")
    print(f"parameters ({len(space.params)}): {', '.join(sorted(space.params))}")
    print(f"size: {_size_text(survey)}")
    refused = survey.samples - survey.valid
    sampled = f"sampled {survey.samples} points (random sampler, seed {survey.seed})"
    print(f"{sampled}: {survey.valid} valid, {refused} refused")
    for reason, count in survey.refusals.items():
        print(f"  {count}x {reason}")
    if survey.num_params:
        low, high = survey.num_params
        print(f"parameters of the valid points: {low:,} to {high:,}")

"""The ``archscreen`` command line.

Local commands (no server): ``validate``, ``screen``, ``grid``, ``tune``, ``datasets``.
Service commands (``up``, ``api``, ``worker``, ``migrate``, ``token``) live in
:mod:`archscreen.service_cli`.
Errors are one readable line on stderr with a non-zero exit: 1 for an invalid
spec or dataset, 2 for a usage error (argparse's convention).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archscreen.cli_common import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Parser,
    add_model_options,
    model_from_args,
    positive_float,
    positive_int,
    rate_list,
)
from archscreen.core.names import TUNER_NAMES
from archscreen.space_cli import add_space_flags, cmd_validate_space, is_space_file

if TYPE_CHECKING:
    from archscreen.core.tuning import Tuner


# Flags kept under their names from before the flags were generated from ScreeningConfig.
OLD_FLAG_NAMES = {"num_copies": "--copies", "wall_clock_s": "--time-budget"}


def _add_training_args(p: argparse.ArgumentParser, *, alrao: bool) -> None:
    """The spec, the dataset, and one flag per screening option, generated from
    :class:`archscreen.config.ScreeningConfig` (types, help and defaults are the model's).

    ``screen`` has them all; ``grid`` and ``tune`` train plain runs, so only the budget's apply (not
    the screener's). A study's seeds are ``--seed`` here (one run)."""
    from archscreen.config import ScreeningConfig

    p.add_argument("spec", help="architecture spec file (YAML or JSON)")
    p.add_argument(
        "--dataset", required=True, help="registry name (see `archscreen datasets`) or a .npz path"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for splits, init and rates (default 0)")
    add_model_options(
        p,
        ScreeningConfig,
        exclude=[*ScreeningConfig.STUDY_FIELDS, *(() if alrao else ScreeningConfig.SCREENER_FIELDS)],
        aliases=OLD_FLAG_NAMES,
    )
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--json", action="store_true", help="print one JSON object, no progress output")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="archscreen",
        description="Screen neural-network architectures fairly with one Alrao run each.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("validate", help="check a spec against a dataset (shapes, limits) without training")
    p.add_argument("spec", help="architecture spec file (YAML or JSON)")
    p.add_argument("--dataset", required=True, help="registry name or a .npz path")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_space_flags(p).set_defaults(func=cmd_validate)  # --samples, --seed: search spaces

    p = sub.add_parser(
        "screen",
        help="train a candidate once with Alrao and estimate its best-learning-rate score",
        description="Train SPEC once with Alrao (random per-feature rates, Switch-averaged output "
        "copies) and report its score, the rate the copies preferred and the Switch posterior.",
    )
    _add_training_args(p, alrao=True)
    p.add_argument("--checkpoint", default=None, metavar="PATH", help="checkpoint file; resumes if it exists")
    p.set_defaults(func=cmd_screen)

    p = sub.add_parser(
        "grid",
        help="train plain SGD (or Adam) at each rate of a grid and report the best",
        description="The learning-rate-grid ground truth: one plain run per rate and seed.",
    )
    _add_training_args(p, alrao=False)
    p.add_argument("--lrs", type=rate_list, required=True, help="comma-separated rates, e.g. 0.001,0.01,0.1")
    p.add_argument("--seeds", type=positive_int, default=1, help="seeds per rate (default 1)")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    p.set_defaults(func=cmd_grid)

    _add_tune_parser(sub)

    p = sub.add_parser("datasets", help="list the built-in datasets")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_datasets)

    _add_other_commands(sub)
    return parser


def _add_other_commands(sub: argparse._SubParsersAction[Parser]) -> None:
    """The commands defined in their own modules: import, the service's, the remote ones (submit,
    status, promote, predict, search, ...) and the CI gate. Imported here, not at the top, so that
    the local commands start without loading the client's dependencies."""
    from archscreen.ci_gate import add_ci_command
    from archscreen.import_cli import add_import_command
    from archscreen.predict_cli import add_predict_commands
    from archscreen.promote_cli import add_promote_commands
    from archscreen.remote_cli import add_remote_commands
    from archscreen.search_cli import add_search_command
    from archscreen.service_cli import add_service_commands

    add_import_command(sub)
    add_service_commands(sub)
    add_remote_commands(sub)
    add_promote_commands(sub)
    add_predict_commands(sub)
    add_search_command(sub)
    add_ci_command(sub)


def _add_tune_parser(sub: argparse._SubParsersAction[Parser]) -> None:
    p = sub.add_parser(
        "tune",
        help="train a candidate with an online learning-rate tuner and recommend its rate",
        description="Train SPEC once with an adaptive learning rate (fd2: Newton on the rate by "
        "finite differences; fd2-adam: the same on Adam's direction; fd1; salera/spalera; ag-adam) "
        "and report the recommended rate (fd2, fd2-adam: the mean rate up to the best epoch; "
        "the others: the rate they converged to), its trajectory and "
        "the best-epoch metrics. Start from --init-lr or from an Alrao screening. "
        "See docs/tuners.md for how close each tuner's rate comes to a grid search's.",
    )
    _add_training_args(p, alrao=False)
    p.add_argument(
        "--tuner",
        choices=TUNER_NAMES,
        default=None,
        help="default: the service's promotion rule (default_tuner_for): fd2-adam after an Alrao-Adam "
        "screening or without --from-screen (Adam is the default screening), fd2 after Alrao-SGD",
    )
    start = p.add_mutually_exclusive_group()
    start.add_argument(
        "--init-lr",
        type=positive_float,
        default=None,
        help="initial rate (default: the tuner's, 1e-3 for Adam tuners)",
    )
    start.add_argument(
        "--from-screen",
        default=None,
        metavar="RESULT.json",
        help="start from the Switch posterior of `archscreen screen --json` output",
    )
    p.add_argument("--paper-exact", action="store_true", help="turn every documented guard off")
    p.add_argument("--checkpoint", default=None, metavar="PATH", help="checkpoint file; resumes if it exists")
    p.set_defaults(func=cmd_tune)


def _version() -> str:
    from archscreen import __version__

    return f"archscreen {__version__}"


def _load_spec_and_data(spec_path: str, dataset: str, seed: int = 0) -> tuple[Any, Any]:
    from archscreen.core.data import DatasetError, load_dataset
    from archscreen.core.spec import SpecError, parse_spec

    path = Path(spec_path)
    if not path.is_file():
        raise CliError(f"{spec_path}: no such spec file")
    try:
        spec = parse_spec(path)
    except SpecError as exc:
        raise CliError(_spec_error_text(spec_path, exc)) from None
    try:
        data = load_dataset(dataset, seed=seed)
    except DatasetError as exc:
        raise CliError(f"--dataset: {exc}") from None
    return spec, data


def _spec_error_text(spec_path: str, exc: Exception) -> str:
    issues = getattr(exc, "issues", None)
    if issues:
        return "\n".join(f"{spec_path}: {i.path}: {i.message}" for i in issues)
    return f"{spec_path}: {exc}"


def _validate(spec_path: str, spec: Any, data: Any) -> Any:
    from archscreen.core.spec import SpecError, validate_spec

    try:
        return validate_spec(spec, data.info)
    except SpecError as exc:
        raise CliError(_spec_error_text(spec_path, exc)) from None


def cmd_validate(args: argparse.Namespace) -> int:
    from archscreen.core.spec import spec_hash

    if is_space_file(args.spec):  # a top-level `space:` key: docs/spec.md, "Search spaces"
        return cmd_validate_space(args)
    spec, data = _load_spec_and_data(args.spec, args.dataset)
    report = _validate(args.spec, spec, data)
    if args.json:
        print(json.dumps({"valid": True, "spec_hash": spec_hash(spec), **_report_dict(report)}, default=str))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{spec.name} on {data.info.name}: valid", title_justify="left")
    for col in ("layer", "kind", "output shape", "params"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for row in _report_dict(report)["layers"]:
        table.add_row(row["path"], row["kind"], str(tuple(row["output_shape"])), f"{row['params']:,}")
    console = Console()
    console.print(table)
    console.print(
        f"parameters (with one output layer): {report.num_params:,}   spec hash: {spec_hash(spec)[:16]}"
    )
    return EXIT_OK


def _report_dict(report: Any) -> dict[str, Any]:
    rows = [
        {"path": r.path, "kind": r.kind, "output_shape": list(r.output_shape), "params": r.params}
        for r in report.rows
    ]
    return {"layers": rows, "num_params": report.num_params, "feature_shape": list(report.feature_shape)}


@contextmanager
def _progress(enabled: bool, total: int, label: str) -> Iterator[Any]:
    """A rich progress bar on a TTY; per-epoch lines on stderr otherwise; nothing with --json."""
    if not enabled:
        yield None
        return
    if not sys.stderr.isatty():

        class _Lines:
            def update(self, epoch: int, text: str) -> None:
                print(f"{label}: epoch {epoch}/{total} {text}", file=sys.stderr, flush=True)

        yield _Lines()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total, info="")

        class _Bar:
            def update(self, epoch: int, text: str) -> None:
                bar.update(task, completed=epoch, info=text)

        yield _Bar()


def _device(args: argparse.Namespace) -> str:
    from archscreen.core.screening import resolve_device

    device = resolve_device(args.device)
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise CliError(f"--device {args.device}: CUDA is not available on this machine")
    return device


def _screening_run(args: argparse.Namespace, data: Any) -> tuple[Any, Any]:
    """The screener and budget the flags describe: ``ScreeningConfig.run``, as the worker runs a
    study's config, with ``--max-epochs auto`` (the default) resolved for the dataset as a study
    resolves it. ``grid`` and ``tune`` have only the budget's flags; they use the budget."""
    from archscreen.config import ScreeningConfig

    config = model_from_args(ScreeningConfig, args, exclude=ScreeningConfig.STUDY_FIELDS)
    assert isinstance(config, ScreeningConfig)
    config = config.for_dataset(args.dataset, len(data.x_train))
    return config.run(args.seed, _device(args))


def _train_config(args: argparse.Namespace, data: Any) -> Any:
    return _screening_run(args, data)[1]


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def cmd_screen(args: argparse.Namespace) -> int:
    from archscreen.core.training.loop import Progress

    spec, data = _load_spec_and_data(args.spec, args.dataset, args.seed)
    _validate(args.spec, spec, data)
    if args.num_copies is not None and args.num_copies < 2:
        raise CliError("--num-copies (--copies) must be at least 2", EXIT_USAGE)
    screener, config = _screening_run(args, data)
    try:
        screener.settings(data.info.task)
    except ValueError as exc:
        raise CliError(f"--lr-min/--lr-max: {exc}", EXIT_USAGE) from None
    with _progress(not args.json, config.max_epochs, f"screen {spec.name}") as bar:

        def on_epoch(p: Progress) -> None:
            if bar is not None:
                acc = p.record.val_accuracy
                bar.update(p.epoch, f"val_loss {p.record.val_loss:.4f}" + (f" acc {acc:.3f}" if acc else ""))

        result = screener.screen(spec, data, config, callback=on_epoch, checkpoint_path=args.checkpoint)
    payload = result.to_dict()
    if args.json:
        payload.pop("curves")
        print(json.dumps(payload))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{result.spec_name} on {result.dataset} ({result.screener})", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows: list[tuple[str, str]] = [
        ("val loss", _fmt(result.val_loss)),
        ("val accuracy", _fmt(result.val_accuracy)),
        ("test accuracy", _fmt(result.test_accuracy)),
    ]
    if result.val_bpc is not None:
        rows.append(("val bits/char", _fmt(result.val_bpc)))
    if result.val_mse is not None:
        rows.append(("val MSE", _fmt(result.val_mse)))
    rows += [
        ("epochs (best)", f"{result.epochs} ({result.best_epoch})"),
        ("stopped because", result.stopped_because),
        ("preferred lr", f"{result.preferred_lr:.3g}" if result.preferred_lr else "-"),
        ("seconds", f"{result.seconds:.1f}"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    if result.switch_posterior:
        post = Table(title="Switch posterior over the output copies' rates", title_justify="left")
        post.add_column("lr", justify="right")
        post.add_column("weight", justify="right")
        post.add_column("")
        for entry in result.switch_posterior:
            post.add_row(f"{entry['lr']:.2g}", f"{entry['weight']:.3f}", "█" * round(30 * entry["weight"]))
        console.print(post)
    return EXIT_OK


def cmd_grid(args: argparse.Namespace) -> int:
    from archscreen.core.screening import ScreenResult, grid

    spec, data = _load_spec_and_data(args.spec, args.dataset, args.seed)
    _validate(args.spec, spec, data)
    config = _train_config(args, data)
    total = len(args.lrs) * args.seeds
    with _progress(not args.json, total, f"grid {spec.name}") as bar:
        done = [0]

        def on_run(r: ScreenResult) -> None:
            done[0] += 1
            if bar is not None:
                bar.update(done[0], f"lr {r.lr:g} seed {r.seed}: val_loss {r.val_loss:.4f}")

        result = grid(spec, data, args.lrs, args.seeds, config, optimizer=args.optimizer, callback=on_run)
    per_lr: list[dict[str, Any]] = []
    for lr, runs in result.by_lr().items():
        per_lr.append(
            {
                "lr": lr,
                "val_loss": [r.val_loss for r in runs],
                "val_accuracy": [r.val_accuracy for r in runs],
                "test_accuracy": [r.test_accuracy for r in runs],
                "epochs": [r.epochs for r in runs],
                "stopped_because": [r.stopped_because for r in runs],
            }
        )
    payload = {
        "spec_name": spec.name,
        "dataset": data.info.name,
        "optimizer": args.optimizer,
        "best_lr": result.best_lr,
        "best_mean_val_loss": result.best_mean_val_loss,
        "runs": per_lr,
        "seconds": result.seconds,
    }
    if args.json:
        print(json.dumps(payload, default=_json_default))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{spec.name} on {data.info.name}: {args.optimizer} grid", title_justify="left")
    for col in ("lr", "mean val loss", "mean val acc", "mean test acc", "epochs"):
        table.add_column(col, justify="right")
    for row in per_lr:
        mark = " *" if row["lr"] == result.best_lr else ""
        table.add_row(
            f"{row['lr']:g}{mark}",
            _fmt(_mean(row["val_loss"])),
            _fmt(_mean(row["val_accuracy"])),
            _fmt(_mean(row["test_accuracy"])),
            ",".join(str(e) for e in row["epochs"]),
        )
    console = Console()
    console.print(table)
    console.print(f"best lr: {result.best_lr:g} (mean val loss {result.best_mean_val_loss:.4f})")
    return EXIT_OK


def _mean(values: list[Any]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return asdict(obj) if hasattr(obj, "__dataclass_fields__") else str(obj)


def _init_lr_from_screen_file(path_text: str, tuner: Tuner) -> float:
    from archscreen.core.tuning import initial_lr_from_screen, posterior_fits_tuner, screening_optimizer

    path = Path(path_text)
    if not path.is_file():
        raise CliError(f"--from-screen: {path_text}: no such file")
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CliError(f"--from-screen: {path_text}: not JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise CliError(f"--from-screen: {path_text}: expected the JSON object of `archscreen screen --json`")
    screened_with = str(payload.get("screener", ""))
    base = screening_optimizer(screened_with)
    if not posterior_fits_tuner(base, tuner):
        tuner_base = tuner.base_optimizer
        raise CliError(
            f"--from-screen: {path_text}: screened with {screened_with}, whose rates are not "
            f"{tuner_base.upper() if tuner_base == 'sgd' else tuner_base.capitalize()} rates; "
            f"use a tuner for {base} or --init-lr"
        )
    try:
        return initial_lr_from_screen(payload)
    except ValueError as exc:
        raise CliError(f"--from-screen: {path_text}: {exc}") from None


def _default_tuner(from_screen: str | None) -> str:
    """The service's promotion rule (``default_tuner_for``) for the screening in ``from_screen``.

    An unreadable file falls back to the default screening's tuner; reading the start rate from it
    then reports the file's problem in one line.
    """
    from archscreen.core.names import default_tuner_for
    from archscreen.core.tuning import screening_optimizer

    screener = None
    if from_screen is not None:
        try:
            payload = json.loads(Path(from_screen).read_text())
            screener = str(payload.get("screener", "")) if isinstance(payload, dict) else None
        except (OSError, ValueError):
            screener = None
    try:
        return default_tuner_for(screening_optimizer(screener) if screener else None)
    except ValueError:  # a screener this version does not know: the default, the start rate decides
        return default_tuner_for(None)


def _rule_text(result: Any) -> str:
    """How ``recommended_lr`` was read off the run, in words."""
    if result.recommended_by == "best":
        return f"mean rate up to best epoch {result.best_epoch}"
    if result.recommended_by == "mean":
        return "mean rate of the run"
    return "converged rate"


def cmd_tune(args: argparse.Namespace) -> int:
    from archscreen.core.training.loop import Progress
    from archscreen.core.tuning import get_tuner

    args.tuner = args.tuner or _default_tuner(args.from_screen)
    tuner = get_tuner(args.tuner, paper_exact=args.paper_exact)
    init_lr = args.init_lr
    if args.from_screen is not None:
        init_lr = _init_lr_from_screen_file(args.from_screen, tuner)
    spec, data = _load_spec_and_data(args.spec, args.dataset, args.seed)
    _validate(args.spec, spec, data)
    config = _train_config(args, data)
    with _progress(not args.json, config.max_epochs, f"tune {spec.name} ({args.tuner})") as bar:

        def on_epoch(p: Progress) -> None:
            if bar is not None:
                acc = p.record.val_accuracy
                bar.update(
                    p.epoch,
                    f"lr {p.extra.get('lr', float('nan')):.4g} val_loss {p.record.val_loss:.4f}"
                    + (f" acc {acc:.3f}" if acc else ""),
                )

        result = tuner.tune(spec, data, init_lr, config, callback=on_epoch, checkpoint_path=args.checkpoint)
    payload = result.to_dict()
    if args.json:
        payload.pop("curves")
        print(json.dumps(payload, default=_json_default))
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    console = Console()
    exact = ", paper-exact" if result.paper_exact else ""
    title = f"{result.spec_name} on {result.dataset} ({result.tuner}{exact})"
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows: list[tuple[str, str]] = [
        ("recommended lr", f"{result.recommended_lr:.4g} ({result.base_optimizer}; {_rule_text(result)})"),
        ("initial lr", f"{result.init_lr:.4g}"),
        ("final lr", f"{result.final_lr:.4g}"),
        ("val loss", _fmt(result.val_loss)),
        ("val accuracy", _fmt(result.val_accuracy)),
        ("test accuracy", _fmt(result.test_accuracy)),
        ("epochs (best)", f"{result.epochs} ({result.best_epoch})"),
        ("stopped because", result.stopped_because),
        ("seconds", f"{result.seconds:.1f}"),
    ]
    rows += [(k.replace("_", " "), str(v)) for k, v in result.events.items()]
    for k, v in rows:
        table.add_row(k, v)
    console.print(table)
    return EXIT_OK


def cmd_datasets(args: argparse.Namespace) -> int:
    from archscreen.core.data import available, get_dataset

    rows: list[dict[str, Any]] = []
    for name in available():
        info = get_dataset(name).info()
        rows.append(
            {
                "name": name,
                "task": info.task,
                "input_shape": list(info.input_shape),
                "classes": info.num_classes,
                "target_dim": info.target_dim,
            }
        )
    if args.json:
        print(json.dumps(rows))
        return EXIT_OK
    for r in rows:
        out = r["classes"] if r["classes"] is not None else f"target_dim {r['target_dim']}"
        print(f"{r['name']:<12} {r['task']:<16} input {tuple(r['input_shape'])}  classes {out}")
    print("or a path to a .npz file with x_train, y_train [, x_val, y_val, x_test, y_test]")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"archscreen {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print(f"archscreen {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

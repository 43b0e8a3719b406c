"""Commands that talk to a running service through :mod:`archscreen.client`: ``submit``, ``status``,
``dataset``, ``plot``, ``export`` (the CI gate, ``ci``, is :mod:`archscreen.ci_gate`).

``--server`` (env ``ARCHSCREEN_SERVER``, default http://127.0.0.1:8000) and ``--token``
(env ``ARCHSCREEN_TOKEN``; for a local ``archscreen up`` it is read from
``<data-dir>/api-token``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel

from archscreen.api.schemas import (
    CandidateRow,
    DatasetOut,
    EstimateOut,
    JobOut,
    LeaderboardOut,
)
from archscreen.cli_common import EXIT_OK, CliError, add_model_options, model_from_args
from archscreen.client import FINAL, ApiError, Client, DownloadedModel, format_detail
from archscreen.config import ScreeningConfig
from archscreen.core.names import RANK_METRIC_NAMES
from archscreen.promote_cli import parse_promote, promote_command

EXIT_RULE_FAILED, EXIT_ERROR = 1, 2
DEFAULT_SERVER = "http://127.0.0.1:8000"


def _server_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        default=os.environ.get("ARCHSCREEN_SERVER", DEFAULT_SERVER),
        help="service URL (env ARCHSCREEN_SERVER; default %(default)s)",
    )
    p.add_argument(
        "--token",
        default=os.environ.get("ARCHSCREEN_TOKEN"),
        help="API token (env ARCHSCREEN_TOKEN; default: the local `archscreen up` token)",
    )
    p.add_argument("--data-dir", metavar="DIR", help="where a local `archscreen up` keeps its token")


def _add_submit_parser(sub: Any) -> None:
    p = sub.add_parser("submit", help="submit spec files to a study on a running service")
    p.add_argument("specs", nargs="+", metavar="SPEC", help="architecture spec files (YAML or JSON)")
    p.add_argument("--study", required=True, help="study name (created if missing, with --dataset)")
    p.add_argument(
        "--dataset",
        help="dataset for a new study: a built-in name (mnist1d), ds_<id>, or a local .npz/.parquet/.csv "
        "file (uploaded, or reused if the service has the same bytes)",
    )
    p.add_argument("--label-column", help="the label column of a .parquet/.csv --dataset file")
    screening = p.add_argument_group(
        "screening of a new study", "generated from ScreeningConfig; left out: the service's default"
    )
    add_model_options(screening, ScreeningConfig, service_defaults=True)
    p.add_argument("--wait", action="store_true", help="wait until screening ends, with progress")
    p.add_argument(
        "--promote",
        type=parse_promote,
        metavar="top-K",
        help="a new study tunes its top K by itself once screening ends (policy.auto); an existing "
        "one is promoted after --wait",
    )
    p.add_argument("--json", action="store_true", help="print the created candidates as JSON")
    _server_args(p)
    p.set_defaults(func=cmd_submit)


def _add_dataset_parsers(sub: Any) -> None:
    p = sub.add_parser("dataset", help="upload, list and delete your datasets on a running service")
    dsub = p.add_subparsers(dest="dataset_command", metavar="ACTION", required=True, parser_class=type(p))
    d = dsub.add_parser(
        "upload",
        help="upload a .npz, .parquet, .csv or .zip (image class folders) file (prints its ds_<id>; the same "
        "bytes are reused)",
    )
    d.add_argument("file", help="the dataset file")
    d.add_argument("--name", help="display name (default: the file name)")
    d.add_argument("--label-column", help="the label column of a .parquet/.csv table")
    _table_option_args(d)
    _image_option_args(d)
    d.add_argument("--json", action="store_true", help="print the dataset as JSON")
    _server_args(d)
    d.set_defaults(func=cmd_dataset_upload)
    d = dsub.add_parser("list", help="your datasets: ref, name, task, shapes, sizes")
    d.add_argument("--json", action="store_true")
    _server_args(d)
    d.set_defaults(func=cmd_dataset_list)
    d = dsub.add_parser("rm", help="delete a dataset (refused while a study uses it)")
    d.add_argument("dataset", help="ds_<id> or the id")
    _server_args(d)
    d.set_defaults(func=cmd_dataset_rm)


def add_remote_commands(sub: Any) -> None:
    _add_submit_parser(sub)
    _add_dataset_parsers(sub)

    p = sub.add_parser("status", help="a study's candidates, ranking and tuning jobs")
    p.add_argument("study", help="study name or id")
    p.add_argument(
        "--metric",
        choices=RANK_METRIC_NAMES,
        default="val_loss",
        help="rank by this metric; estimate: the score extrapolated from each screening curve",
    )
    p.add_argument("--json", action="store_true")
    _server_args(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("plot", help="write a study's curves, posterior, ranking and tuning as one PNG")
    p.add_argument("study", help="study name or id")
    p.add_argument("-o", "--output", default=None, help="image path (default STUDY.png)")
    _server_args(p)
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser(
        "export",
        help="download a study's tuned model (best tuning job) as a PyTorch file",
        description="Write the model of the study's answer, the tuning job the leaderboard's best row names "
        "(each candidate's best start by validation, then the best tuned score on the study's metric, "
        "policy.metric, default val_loss), or the job given with --job. "
        "The file is torch.save({format, state_dict, spec, lr, tuner, metrics, dataset, seed, job_id}); "
        "load it with torch.load(PATH, weights_only=True) and "
        "archscreen.core.training.model.build_plain_model(f['spec'], DatasetInfo(**f['dataset'])).",
    )
    p.add_argument("study", help="study name or id")
    p.add_argument("-o", "--output", metavar="PATH", help="file to write (default STUDY.pt)")
    p.add_argument("--job", type=int, metavar="ID", help="this tuning job of the study instead of the best")
    _server_args(p)
    p.set_defaults(func=cmd_export)


def _token(args: argparse.Namespace) -> str:
    if args.token:
        return str(args.token)
    from archscreen.settings import Settings

    data_dir = Path(args.data_dir) if args.data_dir else Settings().data_dir
    path = data_dir / "api-token"
    if path.exists():
        return path.read_text().strip()
    raise CliError(
        f"no API token: pass --token, set ARCHSCREEN_TOKEN, or run `archscreen up` here ({path} missing)"
    )


@contextmanager
def _client(server: str, token: str) -> Iterator[Client]:
    c = Client(server, token)
    try:
        c.request("GET", "/api/v1/studies", params={"limit": 1})
        yield c
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the service at {server}: {type(exc).__name__}", EXIT_ERROR) from None
    except ApiError as exc:
        raise CliError(f"the service at {server} answered {exc}", EXIT_ERROR) from None
    finally:
        c.close()


def _load_yaml(path: Path, code: int | None = None) -> Any:
    """YAML/JSON from a file under the service's hostile-input bounds (alias expansion, depth)."""
    from archscreen.core.spec import SpecError
    from archscreen.core.spec.parse import load_spec_text

    try:
        return load_spec_text(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        error = f"{path}: cannot read: {' '.join(str(exc).split())}"
    except SpecError as exc:
        error = f"{path}: {exc.issues[0].message}"
    raise CliError(error) if code is None else CliError(error, code)


def _read_spec(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise CliError(f"{path}: no such file")
    doc = _load_yaml(p)
    if not isinstance(doc, dict):
        raise CliError(f"{path}: expected a mapping with 'layers' and 'head'")
    doc.setdefault("name", p.stem)
    return doc


class ProgressReporter:
    """A rich progress bar on a terminal; one line per change otherwise (reads well in CI logs)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self._last: dict[int, tuple[str, int]] = {}
        self._progress: Any = None
        self._tasks: dict[int, Any] = {}

    def __enter__(self) -> ProgressReporter:
        if self.enabled and self.tty:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("{task.description:<28}"),
                BarColumn(),
                TextColumn("{task.fields[state]:<10}"),
                TimeElapsedColumn(),
                transient=False,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()

    def update(self, cands: list[CandidateRow]) -> None:
        """Show the candidates of a study's summary (each row carries its progress)."""
        if not self.enabled:
            return
        for c in cands:
            running = c.progress if c.state == "running" else None
            epoch = running.epoch if running else 0
            total = running.max_epochs if running else 1
            frac = 1.0 if c.state in FINAL else (running.fraction if running else 0.0)
            if self._progress is not None:
                if c.id not in self._tasks:
                    self._tasks[c.id] = self._progress.add_task(c.name[:28], total=1.0, state=c.state)
                self._progress.update(self._tasks[c.id], completed=frac, state=c.state)
            elif self._last.get(c.id) != (c.state, epoch):
                self._last[c.id] = (c.state, epoch)
                where = f" epoch {epoch}/{total}" if c.state == "running" else ""
                if c.state in ("paused", "stopped") and c.rung_epochs is not None:
                    where = f" at {c.rung_epochs} epochs (ASHA)"
                print(
                    f"[{time.strftime('%H:%M:%S')}] {c.name}: {c.state}{where}",
                    file=sys.stderr,
                    flush=True,
                )


# ------------------------------------------------------------------------------ submit / status


DATASET_SUFFIXES = (".npz", ".parquet", ".pq", ".csv", ".zip")


def _is_dataset_file(value: str) -> bool:
    return value.lower().endswith(DATASET_SUFFIXES) or os.sep in value or Path(value).is_file()


def resolve_dataset(c: Client, value: str, label_column: str | None = None, *, quiet: bool = False) -> str:
    """A study's ``dataset`` for ``value``: a built-in name or ``ds_<id>`` as is; a local file is
    uploaded, or reused when the service already has the same bytes (found by sha256)."""
    if not _is_dataset_file(value):
        return value
    path = Path(value)
    if not path.is_file():
        raise CliError(f"{value}: no such dataset file")
    from archscreen.store.blobs import sha256_of

    found = c.dataset_by_content(sha256_of(path), label_column=label_column)
    if found is not None:
        if not quiet:
            print(f"{value}: already uploaded as {found.ref}", file=sys.stderr)
        return found.ref
    return _upload(c, path, None, label_column, quiet=quiet).ref


def _upload(
    c: Client,
    path: Path,
    name: str | None,
    label_column: str | None,
    *,
    quiet: bool,
    options: dict[str, Any] | None = None,
) -> DatasetOut:
    from archscreen.store.datasets import name_from_file

    # the file name as a valid dataset name: "data (1).npz" → "data _1_.npz"
    name = name or name_from_file(path.name)
    size = path.stat().st_size
    show = not quiet and size > 4 * 2**20 and sys.stderr.isatty()
    try:
        if show:
            from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

            with Progress(
                "{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), transient=True
            ) as bar:
                task = bar.add_task(f"uploading {path.name}", total=size)
                ds = c.upload_dataset(
                    path,
                    name=name,
                    label_column=label_column,
                    options=options,
                    on_progress=lambda sent, _total: bar.update(task, completed=sent),
                )
        else:
            ds = c.upload_dataset(path, name=name, label_column=label_column, options=options)
    except ApiError as exc:
        raise CliError(f"{path}: {exc}") from None
    if not quiet:
        verb = "uploaded as" if ds.created else "already uploaded as"
        print(f"{path}: {verb} {ds.ref} ({ds.task}, input {ds.input_shape})", file=sys.stderr)
    return ds


def _json(value: BaseModel | list[Any]) -> str:
    """A client result as the API served it (indented JSON)."""
    if isinstance(value, list):
        return json.dumps([v.model_dump(mode="json") for v in value], indent=2)
    return value.model_dump_json(indent=2)


def _dataset_id(value: str) -> int:
    digits = value.removeprefix("ds_")
    if not digits.isdigit():
        raise CliError(f"{value!r} is not a dataset (ds_<id> or the id)")
    return int(digits)


def _table_option_args(p: argparse.ArgumentParser) -> None:
    """A table's preprocessing options (the upload's query parameters); left out, the service's
    defaults apply (defined once, in core/table_options.py)."""
    p.add_argument(
        "--no-standardize",
        dest="standardize",
        action="store_false",
        default=None,
        help="keep a table's numeric columns as they are (default: standardised on the train split)",
    )
    p.add_argument(
        "--categorical-column",
        dest="categorical_columns",
        action="append",
        metavar="NAME",
        help="an integer column of a table to one-hot like its string columns (repeatable)",
    )
    p.add_argument(
        "--max-categories",
        type=int,
        metavar="N",
        help="one-hot columns per categorical column; rarer values share an 'other' column",
    )


def _image_option_args(p: argparse.ArgumentParser) -> None:
    """An image upload's options (the upload's ``image_size``/``image_mode``); left out, the
    service's defaults (the median size capped at 64, RGB if any image is in colour)."""
    p.add_argument("--image-size", metavar="N|HxW", help="images: resize every image to this size")
    p.add_argument("--image-mode", choices=["L", "RGB"], help="images: one channel (L) or three (RGB)")


def _table_options(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("standardize", "categorical_columns", "max_categories", "image_size", "image_mode")
    return {key: getattr(args, key) for key in keys if getattr(args, key, None) is not None}


def cmd_dataset_upload(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{args.file}: no such file")
    with _client(args.server, _token(args)) as c:
        ds = _upload(c, path, args.name, args.label_column, quiet=args.json, options=_table_options(args))
    print(_json(ds) if args.json else ds.ref)
    return EXIT_OK


def cmd_dataset_list(args: argparse.Namespace) -> int:
    with _client(args.server, _token(args)) as c:
        rows = c.datasets()
    if args.json:
        print(_json(rows))
        return EXIT_OK
    if not rows:
        print("no datasets (upload one with `archscreen dataset upload FILE`)")
        return EXIT_OK
    print(f"{'ref':<8} {'name':<24} {'task':<15} {'input':<12} {'train/val/test':>16} {'MB':>8}")
    for d in rows:
        splits = "/".join(str(d.split_sizes[k]) for k in ("train", "val", "test"))
        print(
            f"{d.ref:<8} {d.name[:24]:<24} {d.task:<15} {d.input_shape!s:<12} "
            f"{splits:>16} {d.size_bytes / 2**20:>8.1f}"
        )
    return EXIT_OK


def cmd_dataset_rm(args: argparse.Namespace) -> int:
    dataset_id = _dataset_id(args.dataset)
    with _client(args.server, _token(args)) as c:
        try:
            c.delete_dataset(dataset_id)
        except ApiError as exc:
            raise CliError(str(exc)) from None
    print(f"deleted ds_{dataset_id}")
    return EXIT_OK


def cmd_submit(args: argparse.Namespace) -> int:
    specs = [_read_spec(p) for p in args.specs]
    with _client(args.server, _token(args)) as c:
        study = c.study_by_name(args.study)
        if study is None:
            if not args.dataset:
                raise CliError(f"study {args.study!r} does not exist: pass --dataset to create it")
            given = model_from_args(ScreeningConfig, args, only_given=True)
            screening = given.model_dump(exclude_unset=True) or None
            policy = {"auto": True, "top_k": args.promote} if args.promote else None
            dataset = resolve_dataset(c, args.dataset, args.label_column, quiet=args.json)
            try:
                study = c.create_study(args.study, dataset=dataset, screening=screening, policy=policy)
            except ApiError as exc:
                raise CliError(str(exc)) from None
        elif args.promote and not args.wait and not study.policy.auto:
            raise CliError(
                f"study {args.study!r} exists and does not promote itself: add --wait, or run "
                f"`{promote_command(args.study, args.promote)}` once screening ends"
            )
        try:
            added = c.add_candidates(study.id, [{"spec": s} for s in specs])
        except ApiError as exc:
            raise CliError(str(exc)) from None
        if args.json:
            print(_json(added))
        else:
            for a in added:
                print(f"{a.name}: candidate {a.id} ({'new' if a.created else 'already in the study'})")
        if args.wait:
            with ProgressReporter(not args.json) as rep:
                c.wait(study.id, on_update=rep.update)
            _print_ranking(c, study.id)
            if args.promote and not study.policy.auto:
                from archscreen.promote_cli import promote

                promote(
                    c, study, argparse.Namespace(top=args.promote, candidates=None, tuner=None, starts=None)
                )
    return EXIT_OK


def format_estimate(est: EstimateOut | None) -> str:
    """``95.1% [93.8, 96.0]`` (accuracy, in percent like the dashboard), ``1.234 [1.2, 1.31]`` (bits
    per character, MSE), or ``-`` without an estimate: the value, then its interval."""
    if not est:
        return "-"
    if est.metric == "val_accuracy":
        return f"{100 * est.value:.1f}% [{100 * est.low:.1f}, {100 * est.high:.1f}]"
    return f"{est.value:.4g} [{est.low:.4g}, {est.high:.4g}]"


def _print_ranking(c: Client, study_id: int, metric: str = "val_loss") -> None:
    r = c.ranking(study_id, metric=metric)
    print(f"rank  {'candidate':<28} {r.metric:>10}  {'estimate [interval]':<24}  preferred lr")
    for row in r.data:
        tie = " (tied)" if row.tied_with else ""
        lr = f"{row.preferred_lr:.3g}" if row.preferred_lr else "-"
        est = format_estimate(row.estimate)
        print(f"{row.rank:>4}  {row.name[:28]:<28} {row.score:>10.4f}  {est:<24}  {lr}{tie}{_rung(row)}")
    for row in r.unranked:
        est = format_estimate(row.estimate)
        print(f"   -  {row.name[:28]:<28} {row.state:>10}  {est}{_rung(row)}")


def _rung(row: Any) -> str:
    """ASHA (a search study): the rung a candidate's runs reached, e.g. ``  [stopped at 3 epochs]``."""
    if row.rung_epochs is None:
        return ""
    where = {"paused": "paused at", "stopped": "stopped at"}.get(row.state, "trained")
    return f"  [{where} {row.rung_epochs} epochs]"


def _budget_line(sc: ScreeningConfig) -> str:
    """The budget each run of the study has: the epoch cap as the study resolved and stored it
    (``max_epochs="auto"`` is the dataset's measured cap, docs/fidelity.md)."""
    rule = "" if sc.stop_rule == "patience" else f", stop rule {sc.stop_rule}"
    return (
        f"screening: alrao-{sc.base}, max_epochs {sc.max_epochs}, patience {sc.patience}{rule}, "
        f"batch {sc.batch_size}, seeds {','.join(map(str, sc.seeds))}"
    )


def cmd_status(args: argparse.Namespace) -> int:
    with _client(args.server, _token(args)) as c:
        study = c.study(int(args.study)) if args.study.isdigit() else c.study_by_name(args.study)
        if study is None:
            raise CliError(f"no study named {args.study!r}")
        if args.json:
            out = {
                "study": study.model_dump(mode="json"),
                "ranking": c.ranking(study.id, metric=args.metric).model_dump(mode="json"),
                "leaderboard": c.leaderboard(study.id).model_dump(mode="json"),
            }
            print(json.dumps(out, indent=2))
            return EXIT_OK
        states = ", ".join(f"{n} {s}" for s, n in sorted(study.jobs_by_state.items())) or "no jobs"
        head = f"study {study.id} {study.name!r} on {study.dataset}"
        print(f"{head}: {study.candidates} candidates; {states}")
        print(_budget_line(study.screening))
        if study.search is not None:
            from archscreen.search_cli import best_line, progress_line

            print(f"search ({study.search.sampler}, {' + '.join(study.search.objectives)}): ", end="")
            print(progress_line(study.search))
            print(best_line(study.search))
        _print_ranking(c, study.id, args.metric)
        board = c.leaderboard(study.id)
        tuned = [r for r in board.data if r.tuning_state]
        for r in tuned:
            lr = f"{r.recommended_lr:.3g}" if r.recommended_lr else "-"
            # a quantile start (p50, p25, p75) was picked among the candidate's starts; the tuning
            # stage's one-job starts (screen-weights, halving) are the candidate's only job
            picked = ", best by validation" if (r.tuning_start or "").startswith("p") else ""
            start = f" (start {r.tuning_start}{picked})" if r.tuning_start else ""
            print(f"tuned {r.name}: {r.tuning_state}, score {r.tuned_score}, recommended lr {lr}{start}")
        if board.best:
            b = board.best
            best_lr = b.recommended_lr or b.preferred_lr
            print(f"best: {b.name} (learning rate {best_lr:.3g})" if best_lr else f"best: {b.name}")
    return EXIT_OK


def cmd_plot(args: argparse.Namespace) -> int:
    from archscreen.plot import plot_study

    with _client(args.server, _token(args)) as c:
        study = c.study(int(args.study)) if args.study.isdigit() else c.study_by_name(args.study)
        if study is None:
            raise CliError(f"no study named {args.study!r}")
        out = plot_study(c, study.id, Path(args.output or f"{study.name}.png"))
    print(out)
    return EXIT_OK


# ------------------------------------------------------------------------------ export


def best_tuning_job(board: LeaderboardOut, jobs: list[JobOut]) -> JobOut | None:
    """The study's tuned answer: the job the leaderboard's ``best`` row names (the server's rule:
    each candidate's best start by validation, then the best candidate on the study's metric),
    looked up in ``jobs`` (``/tuning-jobs``); None while no tuning job has succeeded with a score.
    Not recomputed here, so the export and the leaderboard cannot disagree."""
    best = board.best
    if best is None or best.tuned_score is None or best.tuning_job_id is None:
        return None
    return next((j for j in jobs if j.id == best.tuning_job_id and j.state == "succeeded"), None)


def cmd_export(args: argparse.Namespace) -> int:
    with _client(args.server, _token(args)) as c:
        study = c.study(int(args.study)) if args.study.isdigit() else c.study_by_name(args.study)
        if study is None:
            raise CliError(f"no study named {args.study!r}")
        metric = study.policy.metric or "val_loss"
        jobs = c.tuning_jobs(study.id)
        if args.job is not None:
            job = next((j for j in jobs if j.id == args.job), None)
            if job is None:
                raise CliError(f"study {study.name!r} has no tuning job {args.job}")
        else:
            job = best_tuning_job(c.leaderboard(study.id), jobs)
            if job is None:
                states = ", ".join(sorted({j.state for j in jobs}))
                raise CliError(
                    f"study {study.name!r}: no tuning job has succeeded yet"
                    + (
                        f" (tuning jobs: {states}; `archscreen status {study.name}`)"
                        if jobs
                        else f" (none promoted: run `{promote_command(study.name)}`)"
                    )
                )
        names = {x.id: x.name for x in c.candidates(study.id)}
        dest = Path(args.output or f"{study.name}.pt")
        try:
            got = _download(c, job.id, dest)
        except ApiError as exc:
            raise CliError(f"tuning job {job.id}: {format_detail(exc.detail)}") from None
        except httpx.HTTPError as exc:
            raise CliError(f"tuning job {job.id}: download failed: {type(exc).__name__}") from None
        except OSError as exc:
            raise CliError(f"{dest}: cannot write: {exc.strerror or exc}") from None
    result = job.result or {}
    score = result.get(metric)
    lr = result.get("recommended_lr")
    print(
        f"study {study.name!r}: tuning job {job.id} ({names.get(job.candidate_id, '?')}, "
        f"{result.get('tuner', '?')}"
        + (f", {metric} {score:.4g}" if isinstance(score, int | float) else "")
        + (f", lr {lr:.3g}" if isinstance(lr, int | float) else "")
        + f"): {got.bytes:,} bytes",
        file=sys.stderr,
    )
    print(got.path)
    return EXIT_OK


def _download(c: Client, job_id: int, dest: Path) -> DownloadedModel:
    """The model file, with a progress bar on a terminal once it turns out to be large."""
    if not sys.stderr.isatty():
        return c.download_model(job_id, dest)
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress(
        "{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(), transient=True
    ) as bar:
        task = bar.add_task(f"downloading {dest.name}", total=None, visible=False)

        def show(received: int, total: int | None) -> None:
            bar.update(task, completed=received, total=total, visible=(total or received) > 4 * 2**20)

        return c.download_model(job_id, dest, on_progress=show)

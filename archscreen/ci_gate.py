"""``archscreen ci CONFIG``: the CI gate. Screen a config file's candidates (and baseline) in one
study on a running service (or an embedded one with ``--local``), judge them by the config's rule,
write JUnit XML and a Markdown summary; the exit status is the verdict (docs/ci.md).

The config file is :class:`CiConfig`, a pydantic model: a bad one is one line naming the field
(``screening.max_epochs: ...``, ``rule.top_k: ...``) and exit 2, before any study is made.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Annotated, Any
from xml.etree import ElementTree as ET

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from archscreen.api.schemas import RankingOut
from archscreen.cli_common import EXIT_OK, CliError
from archscreen.client import ApiError, Client
from archscreen.config import ScreeningConfig, SearchConfig
from archscreen.core.names import Metric
from archscreen.remote_cli import (
    EXIT_ERROR,
    EXIT_RULE_FAILED,
    ProgressReporter,
    _client,
    _is_dataset_file,
    _load_yaml,
    _read_spec,
    _server_args,
    _token,
    resolve_dataset,
)


def add_ci_command(sub: Any) -> None:
    p = sub.add_parser(
        "ci",
        help="CI gate: screen the candidates of a config file, fail the build on a regression",
        description="Submit the candidates (and baseline) of CONFIG, wait, write JUnit XML and a Markdown "
        "summary. Exit 0: every candidate passes the rule; 1: a candidate fails it; 2: error "
        "(bad config, server unreachable, a job failed, timeout).",
    )
    p.add_argument("config", help="CI config file (YAML); see docs/ci.md")
    p.add_argument("--local", action="store_true", help="start an embedded service for this run")
    p.add_argument("--junit", metavar="PATH", help="write a JUnit XML report here")
    p.add_argument(
        "--summary", metavar="PATH", help="write a Markdown summary here (e.g. $GITHUB_STEP_SUMMARY)"
    )
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait (default: config timeout_s)")
    _server_args(p)
    p.set_defaults(func=cmd_ci)


class CiRule(BaseModel):
    """When a candidate fails: worse than the baseline by more than ``max_regression`` (in the
    metric's units), and/or ranked outside the ``top_k`` of the candidates."""

    model_config = ConfigDict(extra="forbid", strict=True)

    max_regression: Annotated[float, Field(ge=0)] | None = None
    top_k: Annotated[int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _one_rule_at_least(self) -> CiRule:
        if self.max_regression is None and self.top_k is None:
            raise ValueError("needs max_regression (a number) and/or top_k (an integer)")
        return self

    def items(self) -> list[tuple[str, float | int]]:
        """The rules given, for the summary."""
        return [(k, v) for k, v in self.model_dump(exclude_none=True).items()]


class CiConfig(BaseModel):
    """The CI gate's config file (YAML). Paths (candidates, baseline, a space, a local dataset
    file) are relative to the file; :func:`load_ci_config` resolves them and checks they exist.

    Either ``candidates`` (spec files, screened in one study) or ``space`` + ``search`` (a search
    study; its best trial by ``metric`` is judged, as ``search-best``). With a space the baseline
    spec is screened in a plain study of its own beside it (a search study takes no submitted
    candidates), with the same screening; ``rule.top_k`` does not apply (the best trial is the
    search's first by construction)."""

    model_config = ConfigDict(extra="forbid")

    study: str = Field("ci", description="study name; a unique suffix is added per run")
    dataset: str
    label_column: str | None = None
    screening: dict[str, Any] = Field(
        default_factory=dict,
        description="ScreeningConfig fields; only these are sent, the rest are the service's defaults",
    )
    candidates: list[Path] | None = Field(None, min_length=1)
    space: Path | None = Field(None, description="a search space file (docs/spec.md), instead of candidates")
    search: SearchConfig | None = Field(None, description="how the space is searched (with space)")
    baseline: Path | None = None
    baseline_score: float | None = None
    metric: Metric = "val_loss"
    rule: CiRule
    timeout_s: Annotated[float, Field(ge=1)] = 1800
    server: str | None = None

    @model_validator(mode="after")
    def _baseline_for_max_regression(self) -> CiConfig:
        if self.rule.max_regression is not None and self.baseline is None and self.baseline_score is None:
            raise ValueError("rule max_regression needs 'baseline' (a spec) or 'baseline_score'")
        if (self.candidates is None) == (self.space is None):
            raise ValueError("needs 'candidates' (spec files) or 'space' (a search space file), not both")
        if self.search is not None and self.space is None:
            raise ValueError("'search' needs 'space'")
        if self.space is not None:
            if self.rule.top_k is not None:
                raise ValueError("rule top_k does not apply to a search (its best trial is judged)")
            self.search = self.search or SearchConfig.model_validate({})
        return self


def load_ci_config(path: Path) -> CiConfig:
    """The config at ``path``, its paths resolved against its folder; one-line :class:`CliError`
    (exit 2) naming the field for anything wrong."""
    if not path.is_file():
        raise CliError(f"{path}: no such config file", EXIT_ERROR)
    doc = _load_yaml(path, EXIT_ERROR)
    if not isinstance(doc, dict):
        raise CliError(f"{path}: expected a mapping", EXIT_ERROR)
    doc.setdefault("study", path.stem)
    try:
        cfg = CiConfig.model_validate(doc)
    except ValidationError as exc:
        raise CliError(f"{path}: {_one_line(exc)}", EXIT_ERROR) from None
    # the screening keys against ScreeningConfig (a bad one is refused before any study is made);
    # only the keys given are sent, so the rest are the service's defaults, the same model's
    try:
        ScreeningConfig.model_validate(cfg.screening)
    except ValidationError as exc:
        raise CliError(f"{path}: screening.{_one_line(exc)}", EXIT_ERROR) from None
    base = path.parent
    if _is_dataset_file(cfg.dataset):  # a local data file, relative to the config
        cfg.dataset = str(base / cfg.dataset)
    cfg.candidates = [base / p for p in cfg.candidates] if cfg.candidates else None
    cfg.baseline = base / cfg.baseline if cfg.baseline else None
    cfg.space = base / cfg.space if cfg.space else None
    for p in [*(cfg.candidates or []), *([cfg.baseline] if cfg.baseline else [])]:
        if not p.is_file():
            raise CliError(f"{path}: spec file {p} does not exist", EXIT_ERROR)
    if cfg.space is not None and not cfg.space.is_file():
        raise CliError(f"{path}: space file {cfg.space} does not exist", EXIT_ERROR)
    return cfg


def _one_line(exc: ValidationError) -> str:
    """The first error as ``field.path: message`` (``missing required key 'rule'`` for a missing one)."""
    err = exc.errors()[0]
    where = ".".join(map(str, err["loc"]))
    if err["type"] == "missing":
        return f"missing required key {where!r}"
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def local_service(data_dir: Path | None, workers: int = 2) -> Iterator[tuple[str, str]]:
    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="archscreen-ci-")
        data_dir = Path(tmp.name)
    data_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    env = {
        k: v for k, v in os.environ.items() if k not in ("ARCHSCREEN_DATABASE_URL", "ARCHSCREEN_BROKER_URL")
    }
    log = open(data_dir / "up.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "archscreen",
            "up",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--data-dir",
            str(data_dir),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise CliError(
                    f"the local service did not start: {(data_dir / 'up.log').read_text()[-500:]}", EXIT_ERROR
                )
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise CliError("the local service was not ready after 120 s", EXIT_ERROR)
            time.sleep(0.3)
        yield url, (data_dir / "api-token").read_text().strip()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        if tmp is not None:
            tmp.cleanup()


class Verdict:
    def __init__(self, name: str, cid: int, state: str, score: float | None, rank: int | None) -> None:
        self.name, self.cid, self.state, self.score, self.rank = name, cid, state, score, rank
        self.failure: str | None = None
        self.error: str | None = None


def _judge(
    cfg: CiConfig, ranking: RankingOut, baseline_id: int | None, cand_ids: dict[int, str]
) -> tuple[list[Verdict], float | None]:
    higher = ranking.higher_is_better
    rows = {r.candidate_id: r for r in [*ranking.data, *ranking.unranked]}
    base_score: float | None = None
    if baseline_id is not None:
        base = rows.get(baseline_id)
        if base is None or base.score is None:
            raise CliError(
                f"the baseline did not finish screening ({base.state if base else 'missing'})", EXIT_ERROR
            )
        base_score = float(base.score)
    elif cfg.baseline_score is not None:
        base_score = float(cfg.baseline_score)
    # candidates' rank among the candidates only (the baseline is a reference, not a competitor)
    order = [r.candidate_id for r in ranking.data if r.candidate_id in cand_ids]
    verdicts: list[Verdict] = []
    for cid, name in cand_ids.items():
        row = rows.get(cid)
        state, score = (row.state, row.score) if row is not None else ("missing", None)
        v = Verdict(name, cid, state, score, order.index(cid) + 1 if cid in order else None)
        if state != "succeeded" or score is None:
            v.error = f"screening ended {state}"
        else:
            allowed, top_k = cfg.rule.max_regression, cfg.rule.top_k
            if allowed is not None and base_score is not None:
                worse_by = (base_score - score) if higher else (score - base_score)
                if worse_by > allowed:
                    v.failure = (
                        f"{cfg.metric} {score:.4f} is worse than the baseline's {base_score:.4f} by "
                        f"{worse_by:.4f} (allowed {allowed})"
                    )
            if top_k is not None and (v.rank is None or v.rank > top_k):
                outside = f"rank {v.rank} is outside the top {top_k}"
                v.failure = f"{v.failure}; {outside}" if v.failure else outside
        verdicts.append(v)
    return verdicts, base_score


def write_junit(path: Path, study: str, verdicts: list[Verdict], seconds: float) -> None:
    suite = ET.Element(
        "testsuite",
        name=f"archscreen:{study}",
        tests=str(len(verdicts)),
        failures=str(sum(v.failure is not None for v in verdicts)),
        errors=str(sum(v.error is not None for v in verdicts)),
        time=f"{seconds:.1f}",
    )
    for v in verdicts:
        case = ET.SubElement(suite, "testcase", classname=f"archscreen.{study}", name=v.name, time="0")
        if v.error:
            ET.SubElement(case, "error", message=v.error).text = v.error
        elif v.failure:
            ET.SubElement(case, "failure", message=v.failure).text = v.failure
        else:
            ET.SubElement(case, "system-out").text = f"score {v.score}, rank {v.rank}"
    path.parent.mkdir(parents=True, exist_ok=True)
    root = ET.Element("testsuites")
    root.append(suite)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)


def markdown_summary(
    cfg: CiConfig, verdicts: list[Verdict], base_score: float | None, ranking: RankingOut
) -> str:
    ok = all(v.failure is None and v.error is None for v in verdicts)
    lines = [f"### archscreen: {'✅ all candidates pass' if ok else '❌ a candidate fails the rule'}", ""]
    rule = ", ".join(f"{k} = {v}" for k, v in cfg.rule.items())
    base = f"{base_score:.4f}" if base_score is not None else "n/a"
    lines += [f"Dataset `{cfg.dataset}`, metric `{cfg.metric}`, rule: {rule}, baseline score {base}.", ""]
    lines += ["| candidate | result | score | rank | preferred lr | note |", "|---|---|---:|---:|---:|---|"]
    prefs = {r.candidate_id: r.preferred_lr for r in ranking.data}
    for v in verdicts:
        result = "error" if v.error else ("fail" if v.failure else "pass")
        score = f"{v.score:.4f}" if v.score is not None else "-"
        lr = f"{prefs[v.cid]:.3g}" if prefs.get(v.cid) else "-"
        lines.append(
            f"| {v.name} | {result} | {score} | {v.rank or '-'} | {lr} | {v.error or v.failure or ''} |"
        )
    return "\n".join(lines) + "\n"


def cmd_ci(args: argparse.Namespace) -> int:
    cfg = load_ci_config(Path(args.config))
    specs = [_read_spec(str(p)) for p in cfg.candidates or []]
    baseline_spec = _read_spec(str(cfg.baseline)) if cfg.baseline else None
    timeout = args.timeout or cfg.timeout_s
    t0 = time.monotonic()
    if args.local:
        ctx: Any = local_service(Path(args.data_dir) if args.data_dir else None)
    else:
        ctx = nullcontext((cfg.server or args.server, None))
    with ctx as (url, local_token):
        token = local_token or _token(args)
        with _client(url, token) as c:
            if cfg.space is not None:
                return _run_search_ci(c, cfg, args, baseline_spec, timeout, t0)
            return _run_ci(c, cfg, args, specs, baseline_spec, timeout, t0)


def _run_ci(
    c: Client,
    cfg: CiConfig,
    args: argparse.Namespace,
    specs: list[dict[str, Any]],
    baseline_spec: dict[str, Any] | None,
    timeout: float,
    t0: float,
) -> int:
    name = f"{cfg.study}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    try:
        dataset = resolve_dataset(c, cfg.dataset, cfg.label_column, quiet=False)
        study = c.create_study(name, dataset=dataset, screening=cfg.screening or None)
    except ApiError as exc:
        raise CliError(f"the service refused the study: {exc}", EXIT_ERROR) from None
    print(f"archscreen ci: study {study.id} ({name}) at {c.base_url}", file=sys.stderr, flush=True)
    try:
        body = [{"spec": s} for s in specs] + (
            [{"spec": baseline_spec, "name": "baseline"}] if baseline_spec else []
        )
        try:
            added = c.add_candidates(study.id, body, idempotency_key=name)
        except ApiError as exc:
            raise CliError(f"invalid candidate: {exc}", EXIT_ERROR) from None
        cand_ids = {a.id: a.name for a in added[: len(specs)]}
        baseline_id = added[len(specs)].id if baseline_spec else None
        if baseline_id in cand_ids:
            raise CliError("a candidate is identical to the baseline spec", EXIT_ERROR)
        with ProgressReporter() as rep:
            c.wait(
                study.id,
                timeout=timeout - (time.monotonic() - t0),
                poll_s=1.0,
                on_update=rep.update,
            )
    except (TimeoutError, KeyboardInterrupt) as exc:
        n = c.cancel_study(study.id)
        why = "timed out" if isinstance(exc, TimeoutError) else "interrupted"
        raise CliError(f"{why}; cancelled {n} unfinished job(s) of study {study.id}", EXIT_ERROR) from None
    ranking = c.ranking(study.id, metric=cfg.metric)
    verdicts, base_score = _judge(cfg, ranking, baseline_id, cand_ids)
    return _report(cfg, args, name, verdicts, base_score, ranking, t0)


def _report(
    cfg: CiConfig,
    args: argparse.Namespace,
    name: str,
    verdicts: list[Verdict],
    base_score: float | None,
    ranking: RankingOut,
    t0: float,
) -> int:
    """JUnit XML, the Markdown summary, one line per verdict; the exit status."""
    if args.junit:
        write_junit(Path(args.junit), name, verdicts, time.monotonic() - t0)
    summary = markdown_summary(cfg, verdicts, base_score, ranking)
    if args.summary:
        Path(args.summary).parent.mkdir(parents=True, exist_ok=True)
        with open(args.summary, "a") as f:
            f.write(summary)
    for v in verdicts:
        status = "ERROR" if v.error else ("FAIL" if v.failure else "PASS")
        print(f"{status}  {v.name}: {v.error or v.failure or f'{cfg.metric} {v.score:.4f}, rank {v.rank}'}")
    if any(v.error for v in verdicts):
        return EXIT_ERROR
    return EXIT_RULE_FAILED if any(v.failure for v in verdicts) else EXIT_OK


def _run_search_ci(
    c: Client,
    cfg: CiConfig,
    args: argparse.Namespace,
    baseline_spec: dict[str, Any] | None,
    timeout: float,
    t0: float,
) -> int:
    """The gate over a search: a search study of ``cfg.space`` (and the baseline spec in a plain
    study beside it), waited for; the search's best trial by ``cfg.metric`` is judged."""
    assert cfg.space is not None and cfg.search is not None
    space = cfg.space
    name = f"{cfg.study}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    studies: list[int] = []
    try:
        dataset = resolve_dataset(c, cfg.dataset, cfg.label_column, quiet=False)
        search = cfg.search.model_dump(exclude_none=True)
        study = c.create_search(
            name, dataset=dataset, space=space.read_text(), search=search, screening=cfg.screening or None
        )
        studies.append(study.id)
        if baseline_spec is not None:
            base_study = c.create_study(f"{name}-baseline", dataset=dataset, screening=cfg.screening or None)
            studies.append(base_study.id)
            c.add_candidates(
                base_study.id, [{"spec": baseline_spec, "name": "baseline"}], idempotency_key=name
            )
    except ApiError as exc:
        for sid in studies:
            c.cancel_study(sid)
        raise CliError(f"the service refused the search: {exc}", EXIT_ERROR) from None
    print(f"archscreen ci: search study {study.id} ({name}) at {c.base_url}", file=sys.stderr, flush=True)
    try:
        from archscreen.search_cli import progress_line

        c.wait_search(
            study.id, timeout=timeout - (time.monotonic() - t0), poll_s=1.0, on_update=_printer(progress_line)
        )
        for sid in studies:  # the last trials' runs (and the baseline's) to their final states
            c.wait(sid, timeout=timeout - (time.monotonic() - t0), poll_s=1.0)
    except (TimeoutError, KeyboardInterrupt) as exc:
        n = sum(c.cancel_study(sid) for sid in studies)
        why = "timed out" if isinstance(exc, TimeoutError) else "interrupted"
        raise CliError(f"{why}; cancelled {n} unfinished job(s) of study {study.id}", EXIT_ERROR) from None
    if baseline_spec is not None:
        base = c.ranking(studies[1], metric=cfg.metric)
        rows = [*base.data, *base.unranked]
        if not rows or rows[0].score is None:
            raise CliError(
                f"the baseline did not finish screening ({rows[0].state if rows else 'missing'})", EXIT_ERROR
            )
        cfg = cfg.model_copy(update={"baseline_score": float(rows[0].score)})
    ranking = c.ranking(study.id, metric=cfg.metric)
    if not ranking.data:
        raise CliError(f"the search of {space.name} found no trial with a score", EXIT_ERROR)
    best = ranking.data[0]
    verdicts, base_score = _judge(cfg, ranking, None, {best.candidate_id: "search-best"})
    verdicts[0].name = f"search-best ({best.name})"
    return _report(cfg, args, name, verdicts, base_score, ranking, t0)


def _printer(line: Any) -> Any:
    """An ``on_update`` that prints the search's progress line to stderr when it changes."""
    last: list[str] = [""]

    def show(s: Any) -> None:
        text = line(s)
        if text.split("; CPU")[0] != last[0]:
            print(text, file=sys.stderr, flush=True)
            last[0] = text.split("; CPU")[0]

    return show

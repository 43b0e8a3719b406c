"""`archscreen ci` as a CI pipeline runs it: the example configs in examples/ci/ on an embedded service."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from tests.conftest import EXAMPLES
from tests.services import free_port

pytestmark = pytest.mark.slow
CI = EXAMPLES / "ci"


def run_ci(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHSCREEN_")}
    env["ARCHSCREEN_DATA_DIR"] = "/nonexistent-archscreen"  # --local must use its own fresh data dir
    return subprocess.run(
        [sys.executable, "-m", "archscreen", "ci", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_gate_passes_a_good_candidate_and_fails_a_regression(tmp_path: Path) -> None:
    good = run_ci(str(CI / "archscreen-ci.yaml"), "--local", "--junit", str(tmp_path / "good.xml"))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "PASS  candidate-cnn" in good.stdout

    summary = tmp_path / "summary.md"
    bad = run_ci(
        str(CI / "archscreen-ci-regression.yaml"),
        "--local",
        "--junit",
        str(tmp_path / "bad.xml"),
        "--summary",
        str(summary),
    )
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAIL  candidate-logreg" in bad.stdout and "PASS  candidate-cnn" in bad.stdout
    suite = ET.parse(tmp_path / "bad.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert set(cases) == {"candidate-cnn", "candidate-logreg"}
    assert cases["candidate-logreg"].find("failure") is not None
    assert cases["candidate-cnn"].find("failure") is None
    text = summary.read_text()
    assert "| candidate-logreg | fail |" in text and "| candidate-cnn | pass |" in text
    # progress reads well in a non-TTY log: one line per change, no control characters
    assert "candidate-cnn: succeeded" in bad.stderr and "\x1b[" not in bad.stderr


def test_gate_errors_are_one_line_with_exit_2(tmp_path: Path) -> None:
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text(
        "dataset: mnist1d\ncandidates: [missing.yaml]\nrule: {max_regression: 0.1}\nbaseline_score: 1\n"
    )
    r = run_ci(str(bad_yaml), "--local")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "missing.yaml" in r.stderr
    r = run_ci(str(tmp_path / "nope.yaml"))
    assert r.returncode == 2 and "no such config file" in r.stderr
    no_rule = tmp_path / "norule.yaml"
    no_rule.write_text(f"dataset: mnist1d\ncandidates: [{CI / 'candidate-cnn.yaml'}]\n")
    r = run_ci(str(no_rule), "--local")
    assert r.returncode == 2 and "'rule'" in r.stderr
    bad_numbers = tmp_path / "numbers.yaml"
    bad_numbers.write_text(
        f"dataset: mnist1d\ncandidates: [{CI / 'candidate-cnn.yaml'}]\n"
        "rule: {top_k: 1.5}\ntimeout_s: soon\n"
    )
    r = run_ci(str(bad_numbers), "--local")
    assert r.returncode == 2 and "rule.top_k: Input should be a valid integer" in r.stderr
    down = run_ci(
        str(CI / "archscreen-ci.yaml"), "--server", f"http://127.0.0.1:{free_port()}", "--token", "as_x"
    )
    assert down.returncode == 2 and "cannot reach the service" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1 and "Traceback" not in down.stderr


def test_gate_timeout_cancels_what_it_started_on_a_shared_server(tmp_path: Path) -> None:
    from archscreen.client import FINAL, Client
    from tests.services import RunningService

    svc = RunningService(tmp_path, f"sqlite:///{tmp_path / 'data' / 'archscreen.db'}", None)
    try:
        svc.cli("migrate")
        svc.token = svc.cli("token", "create", "--tenant", "ci").stdout.strip().splitlines()[-1]  # type: ignore[attr-defined]
        svc.start_api()
        svc.start_worker(concurrency=1)
        svc.wait_ready()
        config = tmp_path / "slow.yaml"
        config.write_text(
            f"study: slow\ndataset: mnist1d\nscreening: {{max_epochs: 500, patience: 500, batch_size: 8}}\n"
            f"baseline: {CI / 'baseline.yaml'}\ncandidates: [{CI / 'candidate-cnn.yaml'}]\n"
            "rule: {max_regression: 0.1}\n"
        )
        r = run_ci(str(config), "--server", svc.url, "--token", svc.token, "--timeout", "8")
        assert r.returncode == 2 and "timed out; cancelled 2 unfinished job(s)" in r.stderr, r.stderr
        with Client(svc.url, svc.token) as c:
            study = c.studies().data[0]
            deadline = time.monotonic() + 60
            while any(x.state not in FINAL for x in c.candidates(study.id)):
                assert time.monotonic() < deadline, svc.logs()
                time.sleep(0.5)
            assert {x.state for x in c.candidates(study.id)} == {"cancelled"}
    finally:
        svc.stop()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("rule: {top_k: 0}\n", "rule.top_k: Input should be greater than or equal to 1"),
        ("rule: {top_k: true}\n", "rule.top_k: Input should be a valid integer"),
        ("rule: {}\n", "rule: needs max_regression (a number) and/or top_k (an integer)"),
        ("rule: {max_regression: 0.1}\n", "rule max_regression needs 'baseline' (a spec) or"),
        ("rule: {top_k: 1}\nmetric: loss\n", "metric: Input should be 'val_loss'"),
        ("rule: {top_k: 1}\ntimeout_s: soon\n", "timeout_s: Input should be a valid number"),
        ("rule: {top_k: 1}\nscreening: {max_epochs: 0}\n", "screening.max_epochs: Input should be greater"),
        ("rule: {top_k: 1}\nbaseline_scor: 1\n", "baseline_scor: Extra inputs are not permitted"),
        ("", "missing required key 'rule'"),
    ],
)
def test_a_bad_config_is_one_line_naming_the_field(tmp_path: Path, extra: str, message: str) -> None:
    from archscreen.ci_gate import load_ci_config
    from archscreen.cli_common import CliError

    config = tmp_path / "ci.yaml"
    config.write_text(f"dataset: mnist1d\ncandidates: [{CI / 'candidate-cnn.yaml'}]\n{extra}")
    with pytest.raises(CliError) as err:
        load_ci_config(config)
    assert err.value.code == 2 and message in str(err.value)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{config}: ")


def test_gate_judges_by_balanced_accuracy(tmp_path: Path) -> None:
    """The class-balanced metrics are gate metrics: higher is better, judged against the baseline."""
    from archscreen.api.schemas import RankingOut, RankRowOut
    from archscreen.ci_gate import _judge, load_ci_config
    from archscreen.cli_common import CliError

    config = tmp_path / "gate.yaml"
    config.write_text(
        f"dataset: mnist1d\ncandidates: [{CI / 'candidate-cnn.yaml'}, {CI / 'candidate-logreg.yaml'}]\n"
        "metric: val_balanced_accuracy\nbaseline_score: 0.75\nrule: {max_regression: 0.1}\n"
    )
    cfg = load_ci_config(config)
    assert cfg.metric == "val_balanced_accuracy"
    # /ranking?metric=val_balanced_accuracy's answer: a majority-class guesser scores 0.5
    rows = [
        RankRowOut.model_construct(candidate_id=1, state="succeeded", score=0.8),
        RankRowOut.model_construct(candidate_id=2, state="succeeded", score=0.5),
    ]
    ranking = RankingOut.model_construct(higher_is_better=True, data=rows, unranked=[])
    verdicts, _ = _judge(cfg, ranking, None, {1: "candidate-cnn", 2: "candidate-logreg"})
    assert [v.failure is None for v in verdicts] == [True, False]
    assert "val_balanced_accuracy 0.5000 is worse than the baseline's 0.7500" in (verdicts[1].failure or "")
    config.write_text(config.read_text().replace("val_balanced_accuracy", "balanced_accuracy"))
    with pytest.raises(CliError, match="val_macro_f1"):
        load_ci_config(config)


def test_gate_over_a_search_space(tmp_path: Path) -> None:
    """`space:` + `search:` in place of candidates: the search's best trial is judged against the
    baseline (screened in a plain study beside the search); a regression fails the build."""
    good = run_ci(str(CI / "archscreen-ci-search.yaml"), "--local", "--junit", str(tmp_path / "good.xml"))
    assert good.returncode == 0, good.stdout + good.stderr
    assert "PASS  search-best (trial-" in good.stdout and "trials asked" in good.stderr
    suite = ET.parse(tmp_path / "good.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "1" and suite.get("failures") == "0"
    strict = tmp_path / "strict.yaml"  # no val_loss is 0: the best trial regresses
    strict.write_text(
        "dataset: digits\nscreening: {max_epochs: 1, seeds: [0]}\n"
        f"space: {EXAMPLES / 'spaces/mlp_space.yaml'}\n"
        "search: {sampler: random, trials: 2, parallel: 2, seed: 1}\nbaseline_score: 0.0\n"
        "rule: {max_regression: 0.0}\n"
    )
    bad = run_ci(str(strict), "--local")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAIL  search-best (trial-" in bad.stdout and "worse than the baseline's 0.0000" in bad.stdout


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("space: SPACE\nrule: {top_k: 1}\n", "rule top_k does not apply to a search"),
        (
            "candidates: [CAND]\nspace: SPACE\nrule: {max_regression: 1}\nbaseline_score: 1\n",
            "not both",
        ),
        ("search: {trials: 3}\ncandidates: [CAND]\nrule: {top_k: 1}\n", "'search' needs 'space'"),
        (
            "space: SPACE\nsearch: {sampler: nsga2}\nrule: {max_regression: 1}\nbaseline_score: 1\n",
            "search.objectives",
        ),
        ("space: nope.yaml\nrule: {max_regression: 1}\nbaseline_score: 1\n", "space file"),
    ],
)
def test_a_bad_search_config_is_one_line(tmp_path: Path, body: str, message: str) -> None:
    from archscreen.ci_gate import load_ci_config
    from archscreen.cli_common import CliError

    config = tmp_path / "ci.yaml"
    body = body.replace("SPACE", str(EXAMPLES / "spaces/mlp_space.yaml"))
    config.write_text("dataset: digits\n" + body.replace("CAND", str(CI / "candidate-cnn.yaml")))
    with pytest.raises(CliError) as err:
        load_ci_config(config)
    assert err.value.code == 2 and message in str(err.value) and "\n" not in str(err.value)

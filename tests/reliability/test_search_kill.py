"""Kill -9 of the process that runs a search step (the worker's main process) between Optuna's ask
and archscreen's link of the trial (issue 29): the trial is neither lost nor run twice.

A test hook (``ARCHSCREEN_TEST_PAUSE_AFTER_ASK``) stops the step right after ``ask()``; the test then
SIGKILLs the worker. Optuna holds a RUNNING trial that archscreen never linked and the study's step
lock is held by a dead step. A second worker takes the lock over (``search_step_hold_s``) and the
step's recovery (step 1 of ``search_step``) samples and links that same trial (sampling is
define-by-run: the killed step had suggested nothing yet): its point is screened once, the search
asks no replacement, and it ends with exactly ``trials`` trials.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from sqlalchemy import select

from archscreen.store import search as search_store
from archscreen.store import studies as study_store
from archscreen.store.models import Job
from tests.worker.procs import deployment, wait_for
from tests.worker.test_search import SCREENING, SPACE, _candidates

pytestmark = pytest.mark.slow
TRIALS = 3


def test_kill_9_between_ask_and_link_loses_no_trial_and_runs_none_twice(tmp_path: Path) -> None:
    from optuna.trial import TrialState

    from archscreen.worker.search import optuna_study

    marker = tmp_path / "asked"
    with deployment(tmp_path, test_pause_after_ask=str(marker), search_step_hold_s="8") as d:
        w1 = d.start_worker("w1")
        d.wait_worker_ready()
        with d.db.session() as s:
            study = study_store.create_study(
                s,
                d.tenant_id,
                name="kill",
                dataset="digits",
                screening=SCREENING,
                policy={"top_k": 1, "auto": True, "starts": 1},
                space=SPACE,
                search={"sampler": "tpe", "trials": TRIALS, "parallel": 1, "seed": 7},
            )
        d.start_search(study.id)
        wait_for(marker.exists, 60, "the step to ask its first trial", d.logs)
        os.kill(w1.pid, signal.SIGKILL)  # the main process, stopped between ask and link
        w1.wait(10)
        number = int(marker.read_text())
        orphan = optuna_study(d.settings, study).trials[number]
        assert orphan.state == TrialState.RUNNING  # asked; define-by-run: nothing suggested yet
        with d.db.session() as s:
            assert search_store.links_of(s, study.id) == {}  # asked by Optuna, never linked

        d.start_worker("w2")  # the hook fired once (its file exists): w2 steps normally
        wait_for(lambda: d.auto_promoted(study.id), 300, "the search to recover, finish and promote", d.logs)
        trials = optuna_study(d.settings, study).trials
        assert len(trials) == TRIALS and all(t.state != TrialState.RUNNING for t in trials)
        with d.db.session() as s:
            links = search_store.links_of(s, study.id)
            screens = list(
                s.execute(select(Job.candidate_id, Job.seed, Job.attempts).where(Job.kind == "screen"))
            )
        assert sorted(links) == list(range(TRIALS))  # every trial linked once, the orphan included
        cands = {c.id: c for c in _candidates(d)}
        recovered = links[number]
        assert trials[number].params  # sampled on recovery, on the same trial
        if recovered.candidate_id is not None:  # its point was screened, as Optuna's trial holds it
            assert cands[recovered.candidate_id].params == trials[number].params
        # one screening run per candidate and seed, each run once
        assert sorted((cid, seed) for cid, seed, _ in screens) == sorted((cid, 0) for cid in cands)
        assert all(attempts == 1 for _, _, attempts in screens), screens
        assert {link.candidate_id for link in links.values() if link.candidate_id} == set(cands)

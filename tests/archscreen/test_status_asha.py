"""``archscreen status`` shows where ASHA left a search study's runs (paused, stopped, at which rung)."""

from __future__ import annotations

from typing import Any

import pytest

from archscreen.api.schemas import RankingOut, RankRowOut
from archscreen.remote_cli import _print_ranking


def _row(cid: int, state: str, rank: int | None, score: float | None, rung: int | None) -> RankRowOut:
    return RankRowOut(
        candidate_id=cid,
        name=f"trial-{cid}",
        state=state,  # type: ignore[arg-type]
        rank=rank,
        score=score,
        score_std=None,
        seeds=1,
        tied_with=[],
        preferred_lr=None,
        tuning_job_id=None,
        tuning_state=None,
        tuned_score=None,
        recommended_lr=None,
        rung_epochs=rung,
    )


class _Client:
    def ranking(self, study_id: int, metric: str = "val_loss") -> RankingOut:
        ranked = [_row(1, "succeeded", 1, 0.9, 9), _row(2, "stopped", 2, 0.4, 3)]
        return RankingOut(
            study_id=study_id,
            metric=metric,
            higher_is_better=False,
            data=ranked,
            count=2,
            unranked=[_row(3, "paused", None, None, 1), _row(4, "queued", None, None, None)],
        )


def test_status_names_the_rung_of_completed_stopped_and_paused_runs(
    capsys: pytest.CaptureFixture[Any],
) -> None:
    _print_ranking(_Client(), 7)  # type: ignore[arg-type]
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("   1  trial-1") and lines[1].endswith("[trained 9 epochs]")
    assert lines[2].startswith("   2  trial-2") and lines[2].endswith("[stopped at 3 epochs]")
    assert "paused" in lines[3] and lines[3].endswith("[paused at 1 epochs]")
    assert "queued" in lines[4] and "epochs]" not in lines[4]  # no ASHA: nothing added

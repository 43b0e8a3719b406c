"""Tuner names, ranking metrics and job states are defined once; every other layer derives them.

core/names.py: tuner names, metrics and job states (store/models.py's column type). These tests fail when a
layer keeps a list of its own that drifts from the definition.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from archscreen.api.app import create_app
from archscreen.cli import build_parser
from archscreen.client import FINAL
from archscreen.core.names import (
    ACTIVE_STATES,
    FINAL_STATES,
    HIGHER_IS_BETTER,
    JOB_STATES,
    METRIC_NAMES,
    RANK_METRIC_NAMES,
    RESULT_METRIC_NAMES,
    TUNER_NAMES,
    WAITING_STATES,
)
from archscreen.settings import Settings
from archscreen.store import ranking as ranking_store


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("openapi")), check_schema=False)
    return app.openapi()


def _enum(prop: dict[str, Any]) -> list[str]:
    """The enum of a property that may be nullable (``anyOf: [{enum}, {type: null}]``)."""
    for branch in [prop, *prop.get("anyOf", [])]:
        if "enum" in branch:
            return list(branch["enum"])
    raise AssertionError(f"no enum in {prop}")


def test_tuner_registry_is_the_named_tuners() -> None:
    from archscreen.core.tuning import TUNERS, get_tuner

    assert tuple(TUNERS) == TUNER_NAMES
    assert {get_tuner(name).name for name in TUNER_NAMES} == set(TUNER_NAMES)


def test_api_enums_are_the_defined_vocabularies(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    assert _enum(schemas["PromotionPolicy"]["properties"]["tuner"]) == list(TUNER_NAMES)
    assert _enum(schemas["PromoteIn"]["properties"]["tuner"]) == list(TUNER_NAMES)
    assert _enum(schemas["PromotionPolicy"]["properties"]["metric"]) == list(METRIC_NAMES)
    for model in ("JobOut", "CandidateOut", "RankRowOut", "CandidateRow"):
        assert _enum(schemas[model]["properties"]["state"]) == list(JOB_STATES), model
    params = openapi["paths"]["/api/v1/studies/{study_id}/ranking"]["get"]["parameters"]
    metric = next(p for p in params if p["name"] == "metric")
    # a ranking also orders by the extrapolated estimate; a promotion policy does not
    assert _enum(metric["schema"]) == list(RANK_METRIC_NAMES) == [*METRIC_NAMES, "estimate"]


def test_cli_choices_and_other_layers_follow_the_definitions(tmp_path: Path) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    tune = sub.choices["tune"]  # type: ignore[index]
    tuner = next(a for a in tune._actions if a.dest == "tuner")
    assert tuple(tuner.choices) == TUNER_NAMES  # type: ignore[arg-type]
    assert ranking_store.METRICS == HIGHER_IS_BETTER
    scores = ("accuracy", "balanced_accuracy", "macro_f1")
    assert set(METRIC_NAMES) == {f"{split}_{m}" for split in ("val", "test") for m in ("loss", *scores)}
    assert {m for m in METRIC_NAMES if HIGHER_IS_BETTER[m]} == {
        f"{s}_{m}" for s in ("val", "test") for m in scores
    }
    status = sub.choices["status"]  # type: ignore[index]
    assert tuple(next(a for a in status._actions if a.dest == "metric").choices) == RANK_METRIC_NAMES  # type: ignore[arg-type]
    # the result-metric list is RunResult's metric fields (defined once, read by the API and export)
    from archscreen.core.runs import RunResult

    metric_fields = {f.name for f in fields(RunResult) if f.name.startswith(("val_", "test_"))}
    assert set(RESULT_METRIC_NAMES) == metric_fields
    assert set(FINAL) == set(FINAL_STATES)
    # every state is exactly one of active, waiting (an ASHA run paused at its rung) or final
    groups = (ACTIVE_STATES, WAITING_STATES, FINAL_STATES)
    assert sorted(s for g in groups for s in g) == sorted(JOB_STATES)

"""The OpenAPI schema states what the API does (in depth: tests/reliability/test_openapi_fuzz.py)."""

from __future__ import annotations

from pathlib import Path

from archscreen.api.app import create_app
from archscreen.core.data import available
from archscreen.settings import Settings


def schema(tmp_path: Path) -> dict:
    app = create_app(Settings(data_dir=tmp_path), check_schema=False)
    return app.openapi()


def test_every_api_route_declares_auth_limit_and_outage_responses(tmp_path: Path) -> None:
    paths = schema(tmp_path)["paths"]
    for path, ops in paths.items():
        if not path.startswith("/api/v1/"):
            continue
        for method, op in ops.items():
            assert {"400", "401", "413", "422", "503"} <= set(op["responses"]), (method, path)


def test_dataset_enum_is_the_registry_and_promote_states_exactly_one_of(tmp_path: Path) -> None:
    components = schema(tmp_path)["components"]["schemas"]
    choices = components["StudyCreate"]["properties"]["dataset"]["anyOf"]
    assert sorted(choices[0]["enum"]) == sorted(available()) and choices[1]["pattern"].startswith("^ds_")
    one_of = components["PromoteIn"]["oneOf"]
    assert [branch["required"] for branch in one_of] == [["top_k"], ["candidate_ids"]]


def test_the_schema_states_what_a_submission_needs(tmp_path: Path) -> None:
    """What the API refuses with a 422 the schema says, where JSON Schema can: schemathesis'
    positive phase then sends no request the API must refuse (tests/reliability/test_openapi_fuzz.py).
    The refusals themselves: tests/api/test_api.py."""
    doc = schema(tmp_path)
    components = doc["components"]["schemas"]
    body = doc["paths"]["/api/v1/studies/{study_id}/candidates"]["post"]["requestBody"]["content"]
    many = next(b for b in body["application/json"]["schema"]["oneOf"] if b.get("type") == "array")
    assert many["minItems"] == 1, "an empty list is refused"
    spec_object, spec_text = components["CandidateCreate"]["properties"]["spec"]["oneOf"]
    assert spec_object["required"] == ["layers", "head"] and spec_text["minLength"] == 1
    assert components["StudyCreate"]["properties"]["name"]["minLength"] == 1
    assert (
        "lr_min must be smaller than lr_max"
        in components["StudyCreate"]["properties"]["screening"]["description"]
    )
    assert "this study's candidates" in components["PromoteIn"]["properties"]["candidate_ids"]["description"]

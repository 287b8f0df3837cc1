"""/openapi.json says what the server does: every status an operation can answer, errors as
problem+json, answers without a body, required bodies, and the task name's rule exactly as
the server checks it (`test_openapi_schemathesis.py` then tries the server against it)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import jsonschema_rs
import pytest

from app import create_app
from app.errors import PROBLEM_JSON
from app.settings import Settings
from app.tasks.schemas import NAME_MAX_LENGTH, InvalidTaskName, clean_name

STATUSES = {
    ("get", "/api/tasks"): {200, 304, 413, 422, 503},
    ("post", "/api/tasks"): {201, 400, 403, 413, 415, 422, 429, 503},
    ("get", "/api/tasks/{task_id}"): {200, 304, 404, 413, 503},
    ("patch", "/api/tasks/{task_id}"): {200, 400, 403, 404, 413, 415, 422, 429, 503},
    ("delete", "/api/tasks/{task_id}"): {204, 403, 404, 413, 429, 503},
    ("get", "/api/stats"): {200, 401, 413},
    ("get", "/healthz"): {200, 413},
    ("get", "/readyz"): {200, 413, 503},
}
JSON_BODIES = {("/readyz", 503)}  # readiness reports itself as JSON when it is down too


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The description as served (building it touches no database)."""
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('spec') / 'unused.sqlite3'}"
    app = create_app(Settings(write_rate_limit=0, env="development", database_url=url))

    async def fetch() -> dict[str, Any]:
        spec: dict[str, Any] = await (await app.test_client().get("/openapi.json")).get_json()
        return spec

    return asyncio.run(fetch())


def operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, methods in spec["paths"].items()
        for method, operation in methods.items()
    }


def test_every_operation_documents_each_status_it_can_answer(spec: dict[str, Any]) -> None:
    documented = {
        key: {int(status) for status in operation["responses"]}
        for key, operation in operations(spec).items()
    }
    assert documented == STATUSES


def test_errors_are_problem_json_under_api_and_pages_elsewhere(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert {"Problem", "ValidationProblem", "FieldError"} <= set(schemas)
    assert "errors" in schemas["ValidationProblem"]["required"]
    for (method, path), operation in operations(spec).items():
        for status, response in operation["responses"].items():
            status, where = int(status), (method, path, status)
            assert response["description"], where
            if (status < 300 and status != 204) or (path, status) in JSON_BODIES:
                assert set(response["content"]) == {"application/json"}, where
                assert response["content"]["application/json"]["schema"], where
            elif status in (204, 304):
                assert "content" not in response, where
            elif path.startswith("/api/"):
                model = "ValidationProblem" if status == 422 else "Problem"
                assert response["content"] == {
                    PROBLEM_JSON: {"schema": {"$ref": f"#/components/schemas/{model}"}}
                }, where
            else:
                assert set(response["content"]) == {"text/html"}, where


def test_conditional_gets_take_if_none_match_and_answer_etag(spec: dict[str, Any]) -> None:
    for path in ("/api/tasks", "/api/tasks/{task_id}"):
        operation = spec["paths"][path]["get"]
        headers = [p["name"] for p in operation["parameters"] if p["in"] == "header"]
        assert headers == ["If-None-Match"]
        assert "ETag" in operation["responses"]["200"]["headers"]
        assert "ETag" in operation["responses"]["304"]["headers"]
    created = spec["paths"]["/api/tasks"]["post"]["responses"]["201"]
    assert "Location" in created["headers"]


def test_bodies_are_required_and_a_patch_changes_at_least_one_field(spec: dict[str, Any]) -> None:
    for path, method in (("/api/tasks", "post"), ("/api/tasks/{task_id}", "patch")):
        body = spec["paths"][path][method]["requestBody"]
        assert body["required"] is True
        assert set(body["content"]) == {"application/json"}
    patch = spec["paths"]["/api/tasks/{task_id}"]["patch"]["requestBody"]["content"]
    schema = patch["application/json"]["schema"]
    assert schema["minProperties"] == 1 and schema["additionalProperties"] is False
    validator = jsonschema_rs.validator_for(schema)
    assert not validator.is_valid({})
    assert not validator.is_valid({"name": None}) and not validator.is_valid({"done": None})
    assert validator.is_valid({"done": True}) and validator.is_valid({"name": "x", "done": False})


def accepted(name: str) -> bool:
    try:
        clean_name(name)
    except InvalidTaskName:
        return False
    return True


def name_validator(spec: dict[str, Any]) -> jsonschema_rs.Validator:
    """The create body's `name`, read by schemathesis' own validator."""
    body = spec["paths"]["/api/tasks"]["post"]["requestBody"]["content"]["application/json"]
    return jsonschema_rs.validator_for(body["schema"]["properties"]["name"])


def test_the_name_schema_is_the_rule_the_server_checks(spec: dict[str, Any]) -> None:
    """Every character up to U+30FF (all the controls and spaces are there), a sample of
    the rest, alone and between letters; lengths at the limit, with and without spaces."""
    validator = name_validator(spec)
    code_points = [*range(0x3100), *range(0x3100, sys.maxunicode + 1, 97)]
    characters = [chr(c) for c in code_points if not 0xD800 <= c <= 0xDFFF]
    disagree = [
        name
        for c in characters
        for name in (c, f"x{c}", f"{c}x", f"x{c}x", f" {c} ")
        if validator.is_valid(name) != accepted(name)
    ]
    assert disagree == []
    most = NAME_MAX_LENGTH
    for name in ("x" * most, " " * (most - 1) + "x", "x" * (most + 1), " " + "x" * most, ""):
        assert validator.is_valid(name) == accepted(name), len(name)

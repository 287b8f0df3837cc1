"""The JSON API's contract: shapes, status codes and problem+json errors, on every database."""

from __future__ import annotations

import json
from typing import Any

import pytest
from quart import Response
from quart.typing import TestClientProtocol as Client

from app.settings import Settings
from tests.support.databases import EVERY_BACKEND

pytestmark = pytest.mark.parametrize("database_url", EVERY_BACKEND, indirect=True)

PROBLEM = "application/problem+json"
JSON = {"Content-Type": "application/json"}
ONE_LINE = "Task name must be one line, without tabs or other control characters."
INVALID_TEXT = "Task name contains invalid Unicode (a lone surrogate)."
NOT_UTF8 = "The body is not valid UTF-8."
NOTES_NOT_TEXT = "Task notes must be text: no control characters other than tabs and line breaks."
TOO_DEEP = "The body is nested too deeply."
MAX_BIGINT = 2**63 - 1


async def create(client: Client, name: str) -> dict[str, Any]:
    response = await client.post("/api/tasks", json={"name": name})
    assert response.status_code == 201
    task: dict[str, Any] = await response.get_json()
    return task


async def assert_problem(response: Response, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.mimetype == PROBLEM
    body: dict[str, Any] = await response.get_json()
    assert body["status"] == status
    assert body["title"] and body["type"] == "about:blank"
    return body


async def test_create_returns_201_with_location(client: Client) -> None:
    response = await client.post("/api/tasks", json={"name": "  Buy milk  "})
    assert response.status_code == 201
    task = await response.get_json()
    assert response.headers["Location"] == f"/api/tasks/{task['id']}"
    assert task["name"] == "Buy milk"
    assert task["done"] is False
    assert set(task) == {"id", "name", "done", "notes", "created_at", "updated_at"}
    assert task["notes"] == ""
    fetched = await client.get(response.headers["Location"])
    assert await fetched.get_json() == task


async def test_list_pages_in_id_order_with_link_to_next(client: Client) -> None:
    ids = [(await create(client, f"task {n}"))["id"] for n in range(5)]
    response = await client.get("/api/tasks?limit=2&offset=2")
    assert response.status_code == 200
    body = await response.get_json()
    assert [t["id"] for t in body["items"]] == ids[2:4]
    assert (body["total"], body["limit"], body["offset"]) == (5, 2, 2)
    assert response.headers["Link"] == '</api/tasks?limit=2&offset=4>; rel="next"'
    last = await client.get("/api/tasks?limit=2&offset=4")
    assert "Link" not in last.headers
    assert [t["id"] for t in (await last.get_json())["items"]] == ids[4:]


async def test_list_defaults_to_50(client: Client) -> None:
    body = await (await client.get("/api/tasks")).get_json()
    assert body == {"items": [], "total": 0, "limit": 50, "offset": 0}


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=101",
        "offset=-1",
        "limit=abc",
        "offset=1.5",
        "limit=-5",
        f"offset={MAX_BIGINT + 1}",
        f"offset={2**64}",
        "offset=" + "9" * 5000,
    ],
)
async def test_bad_paging_is_422_naming_the_field(client: Client, query: str) -> None:
    body = await assert_problem(await client.get(f"/api/tasks?{query}"), 422)
    assert body["errors"][0]["loc"] == [query.split("=")[0]]


async def test_the_largest_offset_is_an_empty_page(client: Client) -> None:
    await create(client, "only")
    response = await client.get(f"/api/tasks?limit=100&offset={MAX_BIGINT}")
    assert response.status_code == 200
    assert "Link" not in response.headers
    body = await response.get_json()
    assert body == {"items": [], "total": 1, "limit": 100, "offset": MAX_BIGINT}


async def test_patch_renames_and_completes(client: Client) -> None:
    task = await create(client, "draft")
    response = await client.patch(f"/api/tasks/{task['id']}", json={"name": "final", "done": True})
    assert response.status_code == 200
    body = await response.get_json()
    assert (body["name"], body["done"]) == ("final", True)
    body = await (await client.patch(f"/api/tasks/{task['id']}", json={"done": False})).get_json()
    assert (body["name"], body["done"]) == ("final", False)


async def test_notes_are_created_patched_and_returned_as_markdown_source(
    client: Client,
) -> None:
    notes = "# Plan\n\n- *one* <script>alert(1)</script>\n- [two](javascript:alert(2))\n"
    response = await client.post("/api/tasks", json={"name": "draft", "notes": notes})
    assert response.status_code == 201
    task = await response.get_json()
    assert task["notes"] == notes
    patch = await client.patch(f"/api/tasks/{task['id']}", json={"notes": "🚀" * 10_000})
    assert patch.status_code == 200
    body = await patch.get_json()
    assert (body["name"], body["notes"]) == ("draft", "🚀" * 10_000)
    assert await (await client.get(f"/api/tasks/{task['id']}")).get_json() == body
    listing = await (await client.get("/api/tasks")).get_json()
    assert listing["items"] == [body]
    cleared = await client.patch(f"/api/tasks/{task['id']}", json={"notes": " \n\t "})
    assert (await cleared.get_json())["notes"] == ""


@pytest.mark.parametrize(
    ("notes", "message"),
    [
        ("x" * 10_001, "Task notes must be at most 10,000 characters."),
        ("a\u0000b", NOTES_NOT_TEXT),
        ("\u001b[31m", NOTES_NOT_TEXT),
        ("\ud800", "Task notes contain invalid Unicode (a lone surrogate)."),
    ],
    ids=["too-long", "nul", "escape", "surrogate"],
)
async def test_bad_notes_are_422_on_create_and_patch_and_store_nothing(
    client: Client, notes: str, message: str
) -> None:
    body = json.dumps({"name": "x", "notes": notes}).encode()
    problem = await assert_problem(await client.post("/api/tasks", data=body, headers=JSON), 422)
    assert problem["errors"] == [{"loc": ["notes"], "msg": message, "type": "task_notes"}]
    task = await create(client, "kept")
    patch_body = json.dumps({"notes": notes}).encode()
    patch = await client.patch(f"/api/tasks/{task['id']}", data=patch_body, headers=JSON)
    assert (await assert_problem(patch, 422))["detail"] == message
    assert await (await client.get(f"/api/tasks/{task['id']}")).get_json() == task
    listing = await (await client.get("/api/tasks")).get_json()
    assert [t["name"] for t in listing["items"]] == ["kept"]


@pytest.mark.parametrize("payload", [{}, {"name": None}, {"done": None}, {"notes": None}])
async def test_patch_with_nothing_to_change_or_null_is_422(
    client: Client, payload: dict[str, Any]
) -> None:
    task = await create(client, "x")
    response = await client.patch(f"/api/tasks/{task['id']}", json=payload)
    await assert_problem(response, 422)
    assert await (await client.get(f"/api/tasks/{task['id']}")).get_json() == task


async def test_delete_returns_204_then_404(client: Client) -> None:
    task = await create(client, "x")
    response = await client.delete(f"/api/tasks/{task['id']}")
    assert response.status_code == 204
    assert await response.get_data() == b""
    await assert_problem(await client.get(f"/api/tasks/{task['id']}"), 404)
    await assert_problem(await client.delete(f"/api/tasks/{task['id']}"), 404)


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
async def test_unknown_id_is_404(client: Client, method: str) -> None:
    kwargs = {"json": {"done": True}} if method == "patch" else {}
    response = await getattr(client, method)("/api/tasks/4242", **kwargs)
    body = await assert_problem(response, 404)
    assert "4242" in body["detail"]


@pytest.mark.parametrize(
    "task_id", ["abc", "-1", "1.5", "99999999999999999999", str(2**63), "%00", "0x10"]
)
async def test_malformed_ids_are_404_not_500(client: Client, task_id: str) -> None:
    await assert_problem(await client.get(f"/api/tasks/{task_id}"), 404)
    response = await client.patch(f"/api/tasks/{task_id}", json={"done": True})
    await assert_problem(response, 404)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   \t\n"}, "name"),
        ({"name": "x" * 501}, "name"),
        ({"name": " " + "x" * 500}, "name"),
        ({"name": 42}, "name"),
        ({"name": None}, "name"),
        ({"name": ["a"]}, "name"),
        ({}, "name"),
        ({"name": "ok", "priority": 1}, "priority"),
    ],
)
async def test_invalid_create_is_422_with_field_errors(
    client: Client, payload: dict[str, Any], field: str
) -> None:
    body = await assert_problem(await client.post("/api/tasks", json=payload), 422)
    assert [field] in [error["loc"] for error in body["errors"]]
    assert (await (await client.get("/api/tasks")).get_json())["total"] == 0


async def test_blank_name_says_task_name_is_required(client: Client) -> None:
    body = await assert_problem(await client.post("/api/tasks", json={"name": "  "}), 422)
    assert body["detail"] == "Task name is required."


@pytest.mark.parametrize(
    ("escaped_name", "message"),
    [
        (r"a\u0000b", ONE_LINE),
        (r"a\tb", ONE_LINE),
        (r"two\nlines", ONE_LINE),
        (r"a\rb", ONE_LINE),
        (r"a\u001bb", ONE_LINE),
        (r"a\u007fb", ONE_LINE),
        (r"a\u0085b", ONE_LINE),
        (r"a\u009fb", ONE_LINE),
        (r"a\u2028b", ONE_LINE),
        (r"\tat the start", ONE_LINE),
        (r"at the end\n", ONE_LINE),
        (r"\u0000", ONE_LINE),
        (r"\ud800", INVALID_TEXT),
        (r"a\udc00b", INVALID_TEXT),
        (r"\ude80\ud83d", INVALID_TEXT),
    ],
)
async def test_control_characters_and_lone_surrogates_are_422_on_create_and_patch(
    client: Client, escaped_name: str, message: str
) -> None:
    # Valid JSON in valid UTF-8: the escapes reach the model as the characters they name.
    body = ('{"name": "' + escaped_name + '"}').encode()
    problem = await assert_problem(await client.post("/api/tasks", data=body, headers=JSON), 422)
    assert problem["detail"] == message
    assert problem["errors"] == [{"loc": ["name"], "msg": message, "type": "task_name"}]
    task = await create(client, "kept")
    patch = await client.patch(f"/api/tasks/{task['id']}", data=body, headers=JSON)
    assert (await assert_problem(patch, 422))["detail"] == message
    listing = await (await client.get("/api/tasks")).get_json()
    assert [t["name"] for t in listing["items"]] == ["kept"]


async def test_names_keep_emoji_joiners_and_surrounding_spaces_are_trimmed(
    client: Client,
) -> None:
    spaces, name = " \\u00a0", "\\ud83d\\ude80 \\ud83d\\udc69\\u200d\\ud83d\\udcbb caf\\u00e9"
    body = '{"name": "' + spaces + name + '\\u3000"}'
    response = await client.post("/api/tasks", data=body.encode(), headers=JSON)
    assert response.status_code == 201
    task = await response.get_json()
    assert task["name"] == "🚀 👩\u200d💻 café"
    assert (await (await client.get(f"/api/tasks/{task['id']}")).get_json())["name"] == task["name"]


async def test_500_character_name_is_accepted(client: Client) -> None:
    task = await create(client, "é" * 500)
    assert task["name"] == "é" * 500


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'{"name": ', "application/json", 400),
        (b"not json", "application/json", 400),
        (b'{"name": "\xff\xfe"}', "application/json", 400),
        ('{"name": "x"}'.encode("utf-16"), "application/json", 400),
        ('{"name": "x"}'.encode("utf-16-le"), "application/json", 400),
        ('{"name": "x"}'.encode("utf-32"), "application/json", 400),
        (b"[" * 30_000, "application/json", 400),
        (b'{"name": ' + b'{"":' * 12_000, "application/json", 400),
        (b'["a", "b"]', "application/json", 422),
        (b'"just a string"', "application/json", 422),
        (b"name=x", "application/x-www-form-urlencoded", 415),
        (b'{"name": "x"}', "text/plain", 415),
        (b'{"name": "x"}', "", 415),
    ],
)
async def test_bad_bodies_are_problems_and_store_nothing(
    client: Client, body: bytes, content_type: str, status: int
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    await assert_problem(await client.post("/api/tasks", data=body, headers=headers), status)
    task = await create(client, "existing")
    patch = await client.patch(f"/api/tasks/{task['id']}", data=body, headers=headers)
    await assert_problem(patch, status)
    listing = await (await client.get("/api/tasks")).get_json()
    assert [t["name"] for t in listing["items"]] == ["existing"]


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'{"name": "\xff"}', NOT_UTF8),
        ('{"name": "x"}'.encode("utf-16"), NOT_UTF8),
        ('{"name": "é"}'.encode("utf-16-be"), NOT_UTF8),
        ('{"name": "x"}'.encode("utf-32"), NOT_UTF8),
        (b"[" * 30_000, TOO_DEEP),
        (b"[" * 30_000 + b"]" * 30_000, TOO_DEEP),
        (b'{"name": ' + b'{"":' * 12_000 + b"1" + b"}" * 12_001, TOO_DEEP),
    ],
    ids=["bad-byte", "utf-16", "utf-16-be", "utf-32", "open-arrays", "arrays", "objects"],
)
async def test_undecodable_bodies_are_400_saying_why(
    client: Client, body: bytes, detail: str
) -> None:
    assert len(body) < Settings().max_body_bytes, "under the body limit, so the decoder has to cope"
    problem = await assert_problem(await client.post("/api/tasks", data=body, headers=JSON), 400)
    assert problem["detail"] == detail


async def test_a_utf8_byte_order_mark_is_ignored(client: Client) -> None:
    body = '\ufeff{"name": "with a BOM"}'.encode()
    response = await client.post("/api/tasks", data=body, headers=JSON)
    assert response.status_code == 201
    task = await response.get_json()
    assert task["name"] == "with a BOM"
    patch = await client.patch(f"/api/tasks/{task['id']}", data=body, headers=JSON)
    assert patch.status_code == 200


async def test_moderately_nested_bodies_are_validated_not_refused(client: Client) -> None:
    body = b'{"name": ' + b"[" * 100 + b"]" * 100 + b"}"
    problem = await assert_problem(await client.post("/api/tasks", data=body, headers=JSON), 422)
    assert problem["errors"][0]["loc"] == ["name"]


async def test_body_over_the_limit_is_413(client: Client) -> None:
    body = b'{"name": "' + b"a" * Settings().max_body_bytes + b'"}'
    headers = {"Content-Type": "application/json"}
    await assert_problem(await client.post("/api/tasks", data=body, headers=headers), 413)


async def test_unknown_route_is_404_problem(client: Client) -> None:
    await assert_problem(await client.get("/api/nothing-here"), 404)
    await assert_problem(await client.get("/api"), 404)


async def test_wrong_method_is_405_problem_with_allow(client: Client) -> None:
    response = await client.put("/api/tasks", json={"name": "x"})
    await assert_problem(response, 405)
    assert set(response.headers["Allow"].split(", ")) >= {"GET", "POST"}


async def test_openapi_describes_the_api(client: Client) -> None:
    spec = await (await client.get("/openapi.json")).get_json()
    paths = spec["paths"]
    assert set(paths["/api/tasks"]) >= {"get", "post"}
    assert set(paths["/api/tasks/{task_id}"]) >= {"get", "patch", "delete"}
    assert "201" in paths["/api/tasks"]["post"]["responses"]
    assert "requestBody" in paths["/api/tasks"]["post"]
    assert not any(path.startswith("/{task_id}") for path in paths), "HTML routes are not API"

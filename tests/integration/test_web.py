"""The HTML task list through its forms, without JavaScript (post/redirect/get)."""

from __future__ import annotations

import re

import pytest
from quart.typing import TestClientProtocol as Client

ONE_LINE = "Task name must be one line, without tabs or other control characters."


async def page(client: Client) -> str:
    response = await client.get("/")
    assert response.status_code == 200
    return await response.get_data(as_text=True)


async def post(client: Client, path: str, **form: str) -> str:
    response = await client.post(path, form=form)
    assert response.status_code == 303
    assert response.headers["Location"] == "/"
    return await page(client)


def task_ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<li id="task-(\d+)"', html)]


async def test_empty_list_says_so(client: Client) -> None:
    html = await page(client)
    assert "No tasks yet" in html
    assert 'action="/"' in html and 'name="name"' in html


async def test_add_redirects_and_shows_the_task_and_a_flash(client: Client) -> None:
    html = await post(client, "/", name="  Buy milk ")
    assert 'value="Buy milk"' in html
    assert "Added “Buy milk”." in html
    assert "Added" not in await page(client), "a flash is shown once"


async def test_blank_name_flashes_required_and_stores_nothing(client: Client) -> None:
    for name in ("", "   "):
        html = await post(client, "/", name=name)
        assert "Task name is required." in html
        assert task_ids(html) == []
    html = await post(client, "/")
    assert "Task name is required." in html


async def test_too_long_name_is_refused_with_a_message(client: Client) -> None:
    html = await post(client, "/", name="x" * 501)
    assert "Task name must be at most 500 characters." in html
    assert task_ids(html) == []


@pytest.mark.parametrize("name", ["a\x00b", "\x00", "a\tb", "two\r\nlines", "a\x7fb"])
async def test_control_characters_are_refused_with_a_message(client: Client, name: str) -> None:
    html = await post(client, "/", name=name)
    assert ONE_LINE in html
    assert task_ids(html) == []
    (task_id,) = task_ids(await post(client, "/", name="kept"))
    html = await post(client, f"/{task_id}/rename", name=name)
    assert ONE_LINE in html and 'value="kept"' in html


async def test_a_raw_nul_in_the_form_body_is_refused(client: Client) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    response = await client.post("/", data=b"name=a%00b", headers=headers)
    assert response.status_code == 303
    html = await page(client)
    assert ONE_LINE in html
    assert task_ids(html) == []


async def test_rename_round_trip(client: Client) -> None:
    (task_id,) = task_ids(await post(client, "/", name="draft"))
    html = await post(client, f"/{task_id}/rename", name="final")
    assert 'value="final"' in html and "Renamed to “final”." in html
    html = await post(client, f"/{task_id}/rename", name=" ")
    assert "Task name is required." in html and 'value="final"' in html


async def test_complete_and_reopen_round_trip(client: Client) -> None:
    (task_id,) = task_ids(await post(client, "/", name="chore"))
    html = await post(client, f"/{task_id}/complete", done="1")
    assert f'<li id="task-{task_id}" class="task done">' in html
    html = await post(client, f"/{task_id}/complete", done="0")
    assert f'<li id="task-{task_id}" class="task">' in html


async def test_delete_removes_only_that_task(client: Client) -> None:
    await post(client, "/", name="keep")
    ids = task_ids(await post(client, "/", name="drop"))
    html = await post(client, f"/{ids[1]}/delete")
    assert task_ids(html) == ids[:1]
    assert "Task deleted." in html


async def test_actions_on_a_missing_task_say_it_is_gone(client: Client) -> None:
    for path in ("/999/delete", "/999/complete", "/999/rename"):
        html = await post(client, path, name="x")
        assert "That task no longer exists." in html


async def test_task_names_are_escaped(client: Client) -> None:
    html = await post(client, "/", name="<script>alert(1)</script>")
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


async def test_unknown_page_is_404_in_the_site_layout(client: Client) -> None:
    response = await client.get("/no/such/page")
    assert response.status_code == 404
    assert response.mimetype == "text/html"
    assert "Back to the task list" in await response.get_data(as_text=True)

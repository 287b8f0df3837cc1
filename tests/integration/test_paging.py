"""The HTML list a page at a time: newest first, keyset paging by id, a "Load more" link that
works without JavaScript and that htmx loads in place."""

from __future__ import annotations

import re

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from app.tasks.service import PAGE_SIZE

HTMX = {"HX-Request": "true", "HX-Request-Type": "partial"}
NEXT = re.compile(r'<a href="(/\?before=\d+)" rel="next"')


def task_ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<li id="task-(\d+)"', html)]


async def get(client: Client, path: str, headers: dict[str, str] | None = None) -> str:
    response = await client.get(path, headers=headers)
    assert response.status_code == 200
    return await response.get_data(as_text=True)


async def seed(app: Quart, count: int) -> list[int]:
    tasks = app.extensions["tasklist"].tasks
    return [(await tasks.create(f"task {n}")).id for n in range(count)]


async def test_pages_go_from_newest_to_oldest_through_next_links(
    app: Quart, client: Client
) -> None:
    ids = await seed(app, 2 * PAGE_SIZE + 7)
    newest_first = ids[::-1]
    pages: list[list[int]] = []
    path: str | None = "/"
    while path:
        html = await get(client, path)
        pages.append(task_ids(html))
        link = NEXT.search(html)
        path = link.group(1) if link else None
    assert pages == [newest_first[:PAGE_SIZE], newest_first[PAGE_SIZE:2 * PAGE_SIZE],
                     newest_first[2 * PAGE_SIZE:]]
    assert "More than 100 tasks" in await get(client, "/")  # not counted past a page


async def test_ten_and_a_hundred_tasks_are_one_page(app: Quart, client: Client) -> None:
    await seed(app, PAGE_SIZE)
    html = await get(client, "/")
    assert len(task_ids(html)) == PAGE_SIZE and 'rel="next"' not in html
    assert f"{PAGE_SIZE} tasks" in html
    response = await client.post("/", form={"name": "one more"}, headers=HTMX)
    assert "More than 100 tasks" in await response.get_data(as_text=True)


async def test_a_new_task_is_first_on_the_first_page(app: Quart, client: Client) -> None:
    await seed(app, PAGE_SIZE + 1)
    await client.get("/")  # cached
    response = await client.post("/", form={"name": "just added"})
    assert response.status_code == 303
    html = await get(client, "/")
    first = task_ids(html)[0]
    assert f'id="task-{first}-name" name="name" value="just added"' in html


async def test_htmx_loads_the_next_page_as_rows_and_its_own_link(
    app: Quart, client: Client
) -> None:
    ids = await seed(app, PAGE_SIZE + 3)
    found = NEXT.search(await get(client, "/", HTMX))
    assert found is not None
    link = found.group(1)
    fragment = await get(client, link, HTMX)
    assert fragment.lstrip().startswith('<li id="task-') and "<section" not in fragment
    assert task_ids(fragment) == ids[:3][::-1]
    assert 'rel="next"' not in fragment  # the last page
    full = await get(client, link)  # without JavaScript: the whole page, that page's rows
    assert full.startswith("<!doctype html>") and task_ids(full) == ids[:3][::-1]


async def test_the_load_more_link_works_with_and_without_javascript(
    app: Quart, client: Client
) -> None:
    await seed(app, PAGE_SIZE + 1)
    html = await get(client, "/")
    more = re.search(r'<li id="load-more"[^>]*><a ([^>]*)>Load more</a></li>', html)
    assert more is not None
    attributes = more.group(1)
    found = re.search(r'href="([^"]+)"', attributes)
    assert found is not None
    href = found.group(1)
    assert f'hx-get="{href}"' in attributes and 'hx-trigger="click, revealed"' in attributes
    # htmx swaps the answer for the link's <li>: the rows go where the link was.
    assert 'hx-target:inherited="closest li" hx-swap:inherited="outerHTML"' in html


@pytest.mark.parametrize("before", ["abc", "0", "-1", "1.5", "", "9" * 30, "١٢"])
async def test_a_bad_page_link_is_a_400_with_a_message(client: Client, before: str) -> None:
    response = await client.get("/", query_string={"before": before})
    assert response.status_code == 400
    assert "The page link is not valid" in await response.get_data(as_text=True)

"""Task notes on the HTML page: the form without JavaScript, the htmx edit in place, bad
input, hostile Markdown, and each task's rendered notes as a cached fragment inside the
view-cached page (Russian doll), on a real memcached."""

from __future__ import annotations

import re
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

import app as app_package
from app import create_app
from app.cache import CacheClient
from app.state import find_state
from app.tasks.notes import ALLOWED_TAGS, LINK_REL
from app.webcache.fragments import LOCAL_BYTES, LocalFragments, fragment_cache_of
from tests.support.memcached import MemcachedProcess, settings_with
from tests.support.xss import VECTORS, Vector
from tests.unit.test_notes import Elements

HX = {"HX-Request": "true", "HX-Request-Type": "partial"}
TOO_LONG = "Task notes must be at most 10,000 characters."
NOT_UTF8 = "Task notes are not valid UTF-8 text."
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
NOTES_TEXT = re.compile(r'<div class="notes-text">(.*?)</div>\n<form class="notes-form"', re.S)


async def create(client: Client, name: str, notes: str = "") -> dict[str, Any]:
    response = await client.post("/api/tasks", json={"name": name, "notes": notes})
    assert response.status_code == 201
    task: dict[str, Any] = await response.get_json()
    return task


async def page(client: Client) -> str:
    response = await client.get("/")
    assert response.status_code == 200
    return await response.get_data(as_text=True)


def row(html: str, task_id: int) -> str:
    match = re.search(rf'<li id="task-{task_id}".*?</details>\n</li>', html, re.S)
    assert match, html[:2000]
    return match.group(0)


def textarea(html: str, task_id: int) -> str:
    match = re.search(rf'<textarea id="task-{task_id}-notes-text"[^>]*>\n(.*?)</textarea>',
                      html, re.S)
    assert match, html[:2000]
    return match.group(1)


# --- the form, without JavaScript and with htmx --------------------------------------------


async def test_empty_notes_show_only_a_collapsed_add_notes_control(client: Client) -> None:
    task = await create(client, "bare")
    html = row(await page(client), task["id"])
    assert f'<details id="task-{task["id"]}-notes" class="notes">' in html
    assert "<summary>Add notes</summary>" in html and 'class="notes-text"' not in html
    assert textarea(html, task["id"]) == ""


async def test_notes_form_without_javascript_redirects_and_the_page_renders_them(
    client: Client,
) -> None:
    task = await create(client, "plan")
    response = await client.post(f"/{task['id']}/notes",
                                 form={"notes": "1. *first*\r\n2. [docs](https://example.com)"})
    assert (response.status_code, response.headers["Location"]) == (303, "/")
    html = row(await page(client), task["id"])
    assert f'<details id="task-{task["id"]}-notes" class="notes">' in html  # collapsed
    assert "<summary>Notes</summary>" in html
    assert "<li><em>first</em></li>" in html
    assert f'<a href="https://example.com" rel="{LINK_REL}">docs</a>' in html
    assert textarea(html, task["id"]) == "1. *first*\n2. [docs](https://example.com)"
    stored = await (await client.get(f"/api/tasks/{task['id']}")).get_json()
    assert stored["notes"] == "1. *first*\n2. [docs](https://example.com)"


async def test_htmx_edit_returns_the_row_open_with_its_notes_and_an_oob_flash(
    client: Client,
) -> None:
    task = await create(client, "plan", "old")
    response = await client.post(f"/{task['id']}/notes", form={"notes": "**new**"}, headers=HX)
    assert response.status_code == 200
    html = await response.get_data(as_text=True)
    assert re.findall(r'<li id="task-(\d+)"', html) == [str(task["id"])]
    assert f'<details id="task-{task["id"]}-notes" class="notes" open>' in html
    assert "<p><strong>new</strong></p>" in html
    assert f'id="task-{task["id"]}-save-notes"' in html  # focus goes back to it
    assert "Notes saved." in html


@pytest.mark.parametrize("htmx", [False, True], ids=["form", "htmx"])
async def test_notes_over_the_limit_are_refused_and_store_nothing(
    client: Client, htmx: bool
) -> None:
    task = await create(client, "keep", "kept")
    draft = "x" * 10_001
    response = await client.post(f"/{task['id']}/notes", form={"notes": draft},
                                 headers=HX if htmx else {})
    if htmx:
        assert response.status_code == 422
        html = await response.get_data(as_text=True)
        assert f'id="task-{task["id"]}-notes-error" class="field-error" role="alert">{TOO_LONG}' \
            in html
        assert textarea(html, task["id"]) == draft  # what was typed, to fix
        assert 'class="notes" open>' in html
    else:
        assert response.status_code == 303
        assert TOO_LONG in await page(client)
    assert (await (await client.get(f"/api/tasks/{task['id']}")).get_json())["notes"] == "kept"


@pytest.mark.parametrize("htmx", [False, True], ids=["form", "htmx"])
async def test_notes_that_are_not_utf8_are_refused_and_store_nothing(
    client: Client, htmx: bool
) -> None:
    task = await create(client, "keep", "kept")
    headers = {**FORM, **(HX if htmx else {})}
    response = await client.post(f"/{task['id']}/notes", data=b"notes=caf%E9", headers=headers)
    if htmx:
        assert response.status_code == 422
        assert NOT_UTF8 in await response.get_data(as_text=True)
    else:
        assert response.status_code == 303
        assert NOT_UTF8 in await page(client)
    assert (await (await client.get(f"/api/tasks/{task['id']}")).get_json())["notes"] == "kept"


async def test_notes_of_a_missing_task_say_it_is_gone(client: Client) -> None:
    response = await client.post("/9999/notes", form={"notes": "x"}, headers=HX)
    assert response.status_code == 410


# --- hostile notes ------------------------------------------------------------------------------


def assert_safe(html: str, vector: Vector) -> None:
    """The rendered notes of a row: only the allowlisted markup, and the vector's text."""
    (rendered,) = NOTES_TEXT.findall(html)
    elements = Elements(rendered)
    for tag, attrs in elements.tags:
        assert tag in ALLOWED_TAGS or (tag, attrs) == ("pre", {"class": "notes-plain"}), tag
        assert not any(name.startswith("on") or name == "style" for name in attrs), attrs
        href = attrs.get("href") or ""
        assert not re.match(r"\s*(javascript|data|vbscript):", href, re.I), href
    assert vector.marker in "".join(elements.text)


@pytest.mark.parametrize("vector", VECTORS, ids=[v.id for v in VECTORS])
async def test_hostile_notes_through_form_htmx_and_api_render_safely(
    client: Client, vector: Vector
) -> None:
    via_form = await create(client, "form")
    posted = await client.post(f"/{via_form['id']}/notes", form={"notes": vector.notes})
    assert posted.status_code == 303
    via_htmx = await create(client, "htmx")
    answer = await client.post(f"/{via_htmx['id']}/notes", form={"notes": vector.notes},
                               headers=HX)
    assert answer.status_code == 200
    assert_safe(await answer.get_data(as_text=True), vector)
    via_api = await create(client, "api", vector.notes)
    html = await page(client)
    for task in (via_form, via_htmx, via_api):
        assert_safe(row(html, task["id"]), vector)
        assert textarea(row(html, task["id"]), task["id"]).count("<") == 0  # escaped source


# --- fragments: Russian doll on a real memcached ----------------------------------------------


class FragmentReads:
    """The fragment `get_many` calls and hits/misses of an app's real cache client."""

    def __init__(self, app: Quart, monkeypatch: pytest.MonkeyPatch) -> None:
        state = find_state(app)
        assert state is not None
        self.app = app
        self.client: CacheClient = state.cache_client
        self.round_trips = 0
        real = self.client.get_many

        async def get_many(keys: list[str]) -> Any:
            if any(":fragment:" in key for key in keys):
                self.round_trips += 1
            return await real(keys)

        monkeypatch.setattr(self.client, "get_many", get_many)
        self.reset()

    def counts(self) -> tuple[int, int]:
        fragment = self.client.counters.snapshot()["kinds"].get("fragment", {})
        return fragment.get("hits", 0), fragment.get("misses", 0)

    def reset(self) -> None:
        self.round_trips = 0
        self.base = self.counts()

    async def stored(self) -> None:
        """Wait for the fragments the last answers store in the background."""
        fragments = fragment_cache_of(self.app.jinja_env)
        assert fragments is not None
        await fragments.stored()

    def since(self) -> tuple[int, int, int]:
        """(round trips, hits, misses) since the last reset."""
        hits, misses = self.counts()
        return self.round_trips, hits - self.base[0], misses - self.base[1]


NOTES = "## Step {n}\n\n- *read* the [docs](https://example.com/{n})\n- `run` it\n"


async def test_a_page_miss_after_a_write_renders_only_the_changed_notes(
    memcached_app: Quart, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = memcached_app.test_client()
    tasks = [await create(client, f"task {n}", NOTES.format(n=n)) for n in range(20)]
    await create(client, "no notes")
    reads = FragmentReads(memcached_app, monkeypatch)
    first = await client.get("/")
    assert first.headers["X-Cache"] == "miss"
    assert reads.since() == (1, 0, 20)  # one get_many; 20 rendered (the empty one is not)
    await reads.stored()

    changed = tasks[7]
    patch = await client.patch(f"/api/tasks/{changed['id']}", json={"notes": "**changed**"})
    assert patch.status_code == 200
    reads.reset()
    second = await client.get("/")
    assert second.headers["X-Cache"] == "miss"  # the page itself is invalidated by the write
    assert reads.since() == (1, 19, 1)
    html = await second.get_data(as_text=True)
    assert "<p><strong>changed</strong></p>" in row(html, changed["id"])
    assert "Step 6" in row(html, tasks[6]["id"])

    reads.reset()
    assert (await client.get("/")).headers["X-Cache"] == "hit"
    assert reads.since() == (0, 0, 0)  # a hit of the page reads no fragment


async def test_htmx_answers_store_the_fragment_the_next_page_miss_reads(
    memcached_app: Quart, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = memcached_app.test_client()
    tasks = [await create(client, f"task {n}", NOTES.format(n=n)) for n in range(5)]
    await page(client)
    reads = FragmentReads(memcached_app, monkeypatch)
    await reads.stored()
    answer = await client.post(f"/{tasks[2]['id']}/notes", form={"notes": "_edited_"},
                               headers=HX)
    assert "<p><em>edited</em></p>" in await answer.get_data(as_text=True)
    assert reads.since() == (1, 0, 1)
    renamed = await client.post(f"/{tasks[3]['id']}/rename", form={"name": "renamed"},
                                headers=HX)
    assert "Step 3" in await renamed.get_data(as_text=True)  # a rename is a new version too
    await reads.stored()
    reads.reset()
    html = await page(client)
    assert reads.since() == (0, 5, 0)  # every fragment from this process's memory
    assert "<p><em>edited</em></p>" in row(html, tasks[2]["id"])
    fragments = fragment_cache_of(memcached_app.jinja_env)
    assert fragments is not None
    fragments.local = LocalFragments(LOCAL_BYTES)  # as another process: memcached's copies
    await client.post(f"/{tasks[0]['id']}/complete", form={"done": "1"}, headers=HX)
    await reads.stored()
    reads.reset()
    html = await page(client)
    assert reads.since() == (1, 5, 0)  # one get_many for all five
    assert "<p><em>edited</em></p>" in row(html, tasks[2]["id"])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_deleted_tasks_fragment_is_never_served_for_the_id_sqlite_reuses(
    memcached_app: Quart,
) -> None:
    client = memcached_app.test_client()
    await create(client, "first")
    doomed = await create(client, "doomed", "old secret notes")
    assert "old secret notes" in await page(client)
    fragments = fragment_cache_of(memcached_app.jinja_env)
    assert fragments is not None
    await fragments.stored()
    assert (await client.delete(f"/api/tasks/{doomed['id']}")).status_code == 204
    reborn = await create(client, "reborn", "new notes")
    assert reborn["id"] == doomed["id"]  # SQLite hands the id out again
    html = await page(client)
    assert "new notes" in row(html, reborn["id"]) and "old secret notes" not in html


async def test_a_new_release_never_serves_the_old_releases_fragments(
    memcached_app: Quart, database_url: str, memcached_server: MemcachedProcess,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = memcached_app.test_client()
    for n in range(3):
        await create(client, f"task {n}", NOTES.format(n=n))
    await page(client)
    await FragmentReads(memcached_app, monkeypatch).stored()
    monkeypatch.setattr(app_package, "release_digest", lambda: "next-release")
    new = create_app(settings_with(database_url, memcached_server))
    async with new.test_app():
        reads = FragmentReads(new, monkeypatch)
        assert "Step 2" in await page(new.test_client())
        assert reads.since() == (1, 0, 3)


async def test_with_memcached_dead_notes_still_render(
    memcached_app: Quart, memcached_server: MemcachedProcess
) -> None:
    client = memcached_app.test_client()
    task = await create(client, "plan", "*before*")
    await page(client)
    memcached_server.kill()
    patch = await client.patch(f"/api/tasks/{task['id']}", json={"notes": "*during*"})
    assert patch.status_code == 200
    assert "<p><em>during</em></p>" in row(await page(client), task["id"])
    answer = await client.post(f"/{task['id']}/notes", form={"notes": "*htmx*"}, headers=HX)
    assert answer.status_code == 200
    assert "<p><em>htmx</em></p>" in await answer.get_data(as_text=True)

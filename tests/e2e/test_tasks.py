"""The task list in a real browser, with JavaScript (htmx swaps, no reload) and without."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, Request, expect

pytestmark = pytest.mark.e2e


def rows(page: Page) -> Locator:
    return page.locator("#tasks > li")


def add(page: Page, name: str) -> None:
    page.get_by_label("Task name").fill(name)
    page.get_by_role("button", name="Add Task").click()


def test_add_rename_complete_delete_with_htmx_never_reloads(page: Page, output_dir: Path) -> None:
    posts: list[dict[str, str]] = []
    page.on("request", lambda r: posts.append(r.headers) if r.method == "POST" else None)
    page.goto("/")
    expect(page.get_by_text("No tasks yet")).to_be_visible()
    page.evaluate("window.__marker = 'still here'")

    add(page, "Buy milk")
    expect(rows(page)).to_have_count(1)
    expect(page.get_by_label("Name of task", exact=False)).to_have_value("Buy milk")
    expect(page.get_by_label("Task name")).to_have_value("")
    expect(page.get_by_label("Task name")).to_be_focused()
    expect(page.locator("#flashes")).to_have_text("Added “Buy milk”.")
    expect(page.locator(".count")).to_have_text("1 task")
    expect(page.get_by_text("No tasks yet")).to_have_count(0)

    page.keyboard.type("Walk the dog")  # focus is back in the input: type and press Enter
    page.keyboard.press("Enter")
    expect(rows(page)).to_have_count(2)
    expect(page.locator(".count")).to_have_text("2 tasks")

    first = rows(page).first
    name = first.get_by_role("textbox")
    name.fill("Buy oat milk")
    name.press("Enter")
    expect(page.locator("#flashes")).to_have_text("Renamed to “Buy oat milk”.")
    expect(rows(page).first.get_by_role("textbox")).to_have_value("Buy oat milk")
    expect(rows(page).first.get_by_role("textbox")).to_be_focused()
    rows(page).first.get_by_role("textbox").fill("Oat milk")
    rows(page).first.get_by_role("button", name="Rename").click()
    expect(page.locator("#flashes")).to_have_text("Renamed to “Oat milk”.")  # row swapped
    row_id = rows(page).first.get_attribute("id")
    assert page.evaluate("document.activeElement.id") == f"{row_id}-rename", "focus kept"

    rows(page).first.get_by_role("button", name="Done").click()
    expect(rows(page).first).to_have_class("task done")
    expect(rows(page).first.get_by_role("button", name="Done")).to_have_attribute(
        "aria-pressed", "true"
    )
    expect(rows(page).first.get_by_role("button", name="Done")).to_be_focused()
    # caret="initial": hiding the caret would inject a <style>, which our CSP rightly blocks.
    page.screenshot(path=output_dir / "tasks.png", full_page=True, caret="initial")

    rows(page).first.get_by_role("button", name="Done").click()
    expect(rows(page).first).to_have_class("task")

    rows(page).first.get_by_role("button", name="Delete").click()
    expect(rows(page)).to_have_count(1)
    expect(page.locator("#flashes")).to_have_text("Task deleted.")
    expect(page.locator("#task-summary")).to_be_focused()  # not lost with the removed row
    rows(page).first.get_by_role("button", name="Delete").click()
    expect(rows(page)).to_have_count(0)
    expect(page.get_by_text("No tasks yet")).to_be_visible()
    expect(page.locator(".count")).to_have_text("0 tasks")

    assert page.evaluate("window.__marker") == "still here", "the page was reloaded"
    assert posts and all(h.get("hx-request") == "true" for h in posts)


def test_empty_name_shows_the_message_in_the_form(page: Page) -> None:
    page.goto("/")
    page.evaluate("window.__marker = 1")
    add(page, "Short-lived")
    rows(page).first.get_by_role("button", name="Delete").click()
    expect(page.locator("#flashes")).to_have_text("Task deleted.")
    page.get_by_role("button", name="Add Task").click()
    error = page.locator("#new-task-error")
    expect(error).to_have_text("Task name is required.")
    expect(page.locator("#flashes")).to_have_text("")  # not "Task deleted.", nor said twice
    expect(page.get_by_label("Task name")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Task name")).to_be_focused()
    expect(rows(page)).to_have_count(0)

    add(page, "Now with a name")  # the re-rendered form is live: htmx still handles it
    expect(rows(page)).to_have_count(1)
    expect(error).to_have_count(0)
    assert page.evaluate("window.__marker") == 1


def test_back_button_after_leaving_the_list_shows_the_rows_added_with_htmx(page: Page) -> None:
    """Plain browser history (a link away, then Back): not a stale copy of the list."""
    page.goto("/")
    add(page, "Survives navigation")
    expect(rows(page)).to_have_count(1)
    page.get_by_role("link", name="Cache stats").click()
    expect(page.get_by_role("heading", name="Cache stats")).to_be_visible()
    page.go_back()
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    expect(rows(page)).to_have_count(1)
    expect(page.locator("#new-task")).to_be_visible()


def test_htmx_history_restore_swaps_in_the_full_page_without_reloading(page: Page) -> None:
    """No template pushes history yet, so htmx's own API pushes an entry here (as an
    `hx-push-url` would). Back then takes htmx 4's restore path: a GET with
    `HX-History-Restore-Request`, which must get the whole page, swapped into <body>."""
    restores: list[Request] = []
    page.on(
        "request",
        lambda r: restores.append(r) if "hx-history-restore-request" in r.headers else None,
    )
    page.goto("/")
    add(page, "Survives a restore")
    expect(rows(page)).to_have_count(1)
    page.evaluate("window.__marker = 1")
    page.evaluate(
        "htmx.ajax('GET', '/stats', {target: '#content', select: '#content', swap: 'outerHTML',"
        " push: 'true'})"
    )
    expect(page.get_by_role("heading", name="Cache stats")).to_be_visible()
    assert page.url.endswith("/stats")

    page.go_back()
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()
    expect(rows(page)).to_have_count(1)
    expect(page.locator(".site-header")).to_have_count(1)  # the page, not a page in the page
    assert [(r.url.removeprefix(page.url), r.headers.get("hx-request-type")) for r in restores] == [
        ("", "full")
    ]
    assert page.evaluate("window.__marker") == 1, "htmx restored it; the browser did not reload"
    add(page, "After the restore")  # the swapped-in page is live: htmx handles its form
    expect(rows(page)).to_have_count(2)


def test_the_same_actions_work_with_javascript_off(nojs_page: Page) -> None:
    page = nojs_page
    page.goto("/")
    page.get_by_role("button", name="Add Task").click()
    expect(page.locator("#flashes")).to_have_text("Task name is required.")

    add(page, "No script")
    expect(page.locator("#flashes")).to_have_text("Added “No script”.")
    expect(rows(page)).to_have_count(1)
    assert page.url.endswith("/"), "post/redirect/get lands back on the list"

    name = rows(page).first.get_by_role("textbox")
    name.fill("Still no script")
    rows(page).first.get_by_role("button", name="Rename").click()
    expect(page.locator("#flashes")).to_have_text("Renamed to “Still no script”.")

    rows(page).first.get_by_role("button", name="Done").click()
    expect(rows(page).first).to_have_class("task done")

    rows(page).first.get_by_role("button", name="Delete").click()
    expect(page.locator("#flashes")).to_have_text("Task deleted.")
    expect(rows(page)).to_have_count(0)
    expect(page.get_by_text("No tasks yet")).to_be_visible()


def create_tasks(base_url: str, count: int) -> None:
    for n in range(count):
        request = urllib.request.Request(
            f"{base_url}/api/tasks", data=json.dumps({"name": f"task {n}"}).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )
        urllib.request.urlopen(request).close()


def test_older_pages_load_in_place_when_scrolled_to(page: Page, base_url: str) -> None:
    create_tasks(base_url, 130)
    page.goto("/")
    page.evaluate("window.__marker = 'still here'")
    expect(rows(page)).to_have_count(101)  # 100 tasks and the "Load more" row
    expect(rows(page).first.get_by_role("textbox")).to_have_value("task 129")
    page.get_by_role("link", name="Load more").scroll_into_view_if_needed()
    expect(rows(page)).to_have_count(130)  # the rest, in place of the link
    expect(rows(page).last.get_by_role("textbox")).to_have_value("task 0")
    expect(page.get_by_role("link", name="Load more")).to_have_count(0)
    assert page.evaluate("window.__marker") == "still here", "loaded without a reload"


def test_older_pages_open_through_the_link_without_javascript(
    nojs_page: Page, base_url: str
) -> None:
    create_tasks(base_url, 103)
    nojs_page.goto("/")
    nojs_page.get_by_role("link", name="Load more").click()
    expect(nojs_page).to_have_url(re.compile(r"/\?before=\d+$"))
    expect(nojs_page.locator("#tasks > li")).to_have_count(3)
    expect(nojs_page.locator("#tasks > li").first.get_by_role("textbox")).to_have_value("task 2")


def test_a_row_whose_task_was_deleted_elsewhere_removes_itself(page: Page, base_url: str) -> None:
    create_tasks(base_url, 2)
    page.goto("/")
    expect(rows(page)).to_have_count(2)
    row_id = rows(page).first.get_attribute("id")
    assert row_id is not None
    gone = row_id.removeprefix("task-")
    request = urllib.request.Request(f"{base_url}/api/tasks/{gone}", method="DELETE")
    urllib.request.urlopen(request).close()  # deleted in another tab, say
    rows(page).first.get_by_role("button", name="Done").click()
    expect(page.locator("#flashes")).to_have_text("That task no longer exists.")
    expect(rows(page)).to_have_count(1)  # the 410 rule inherited from #tasks removed it
    expect(page.locator(f"#task-{gone}")).to_have_count(0)

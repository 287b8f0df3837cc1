"""Task notes in a real browser: edited in place with htmx, by form without JavaScript, and
hostile Markdown from every path rendered inert."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
from playwright.sync_api import Dialog, Locator, Page, expect

from tests.support.xss import VECTORS

pytestmark = pytest.mark.e2e


def api_create(base_url: str, name: str, notes: str = "") -> int:
    request = urllib.request.Request(
        f"{base_url}/api/tasks", data=json.dumps({"name": name, "notes": notes}).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )
    with urllib.request.urlopen(request) as response:
        task: dict[str, Any] = json.load(response)
    return int(task["id"])


def row(page: Page, task_id: int) -> Locator:
    return page.locator(f"#task-{task_id}")


def edit_notes(page: Page, task_id: int, notes: str) -> None:
    """Open the task's notes, put `notes` in the field (as a script could: past its
    maxlength too) and save."""
    details = page.locator(f"#task-{task_id}-notes")
    if details.get_attribute("open") is None:
        details.locator("summary").click()
    page.locator(f"#task-{task_id}-notes-text").evaluate("(el, text) => el.value = text", notes)
    page.locator(f"#task-{task_id}-save-notes").click()


def test_notes_are_edited_in_place_with_htmx_and_focus_stays(page: Page, base_url: str) -> None:
    task_id = api_create(base_url, "Plan the trip")
    page.goto("/")
    page.evaluate("window.__marker = 'still here'")
    details = page.locator(f"#task-{task_id}-notes")
    expect(details.locator("summary")).to_have_text("Add notes")
    expect(page.locator(f"#task-{task_id}-notes-text")).to_be_hidden()  # collapsed

    edit_notes(page, task_id, "1. *Book* the [train](https://example.com)\n2. Pack")
    expect(page.locator("#flashes")).to_have_text("Notes saved.")
    expect(details.locator("summary")).to_have_text("Notes")
    expect(details.locator(".notes-text em")).to_have_text("Book")
    link = details.locator(".notes-text a")
    expect(link).to_have_attribute("rel", "nofollow noopener noreferrer")
    expect(page.locator(f"#task-{task_id}-save-notes")).to_be_focused()  # row swapped, focus kept
    assert page.evaluate("window.__marker") == "still here", "the page was reloaded"

    page.reload()  # the page (view-cached, its notes a cached fragment) shows the same
    expect(details).not_to_have_attribute("open", "")
    expect(details.locator(".notes-text li")).to_have_count(2)


def test_notes_refused_under_htmx_keep_the_draft_and_say_why(page: Page, base_url: str) -> None:
    task_id = api_create(base_url, "Long notes", "kept")
    page.goto("/")
    edit_notes(page, task_id, "x" * 10_001)
    error = page.locator(f"#task-{task_id}-notes-error")
    expect(error).to_have_text("Task notes must be at most 10,000 characters.")
    expect(page.locator(f"#task-{task_id}-notes-text")).to_have_value("x" * 10_001)
    page.reload()
    expect(page.locator(f"#task-{task_id}-notes-text")).to_have_value("kept")


def test_notes_are_edited_by_form_with_javascript_off(nojs_page: Page, base_url: str) -> None:
    page = nojs_page
    task_id = api_create(base_url, "No script")
    page.goto("/")
    edit_notes(page, task_id, "**bold** and `code`")
    expect(page.locator("#flashes")).to_have_text("Notes saved.")
    assert page.url.endswith("/"), "post/redirect/get lands back on the list"
    details = page.locator(f"#task-{task_id}-notes")
    expect(details).not_to_have_attribute("open", "")
    details.locator("summary").click()  # <details> opens without JavaScript
    expect(details.locator(".notes-text strong")).to_have_text("bold")
    expect(page.locator(f"#task-{task_id}-notes-text")).to_have_value("**bold** and `code`")


# Any attribute whose name starts with "on", a javascript:/data: URL, or a script other
# than htmx, anywhere in the document.
DANGER = """() => {
  const found = [];
  for (const el of document.querySelectorAll("*")) {
    for (const attr of el.attributes) {
      const value = attr.value.replace(/[\\s\\u0000-\\u001f]/g, "").toLowerCase();
      if (attr.name.startsWith("on")) found.push(`${el.tagName} ${attr.name}`);
      if (/^(javascript|data|vbscript):/.test(value)) found.push(`${el.tagName} ${value}`);
    }
  }
  for (const script of document.scripts) {
    if (!script.src.includes("/static/vendor/htmx")) found.push(script.outerHTML.slice(0, 80));
  }
  const inert = ".notes-text :is(script, iframe, object, embed, svg, img, style, form, input)";
  for (const el of document.querySelectorAll(inert)) found.push(el.outerHTML.slice(0, 80));
  return found;
}"""


def test_hostile_notes_from_the_form_htmx_and_the_api_never_run(
    page: Page, nojs_page: Page, base_url: str
) -> None:
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    for watched in (page, nojs_page):
        watched.on("dialog", on_dialog)
    tasks: list[tuple[int, str]] = []
    for vector in VECTORS:
        tasks.append((api_create(base_url, f"api {vector.id}", vector.notes), vector.marker))
    for browser_page, how in ((nojs_page, "form"), (page, "htmx")):
        for vector in VECTORS:
            task_id = api_create(base_url, f"{how} {vector.id}")
            browser_page.goto("/")
            edit_notes(browser_page, task_id, vector.notes)
            expect(browser_page.locator("#flashes")).to_have_text("Notes saved.")
            assert browser_page.evaluate(DANGER) == [], f"{how} {vector.id}"
            tasks.append((task_id, vector.marker))

    page.goto("/")
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    for element in page.locator(".notes-text a").all():
        element.hover()
    for task_id, marker in tasks:
        expect(row(page, task_id).locator(".notes-text")).to_contain_text(marker)
    assert page.evaluate(DANGER) == []
    assert dialogs == []

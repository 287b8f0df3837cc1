"""The task list under htmx: one URL, a fragment for htmx swaps and the page otherwise."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from quart.typing import TestClientProtocol as Client

from app.htmx import wants_partial
from app.settings import PROJECT_ROOT

HX = {"HX-Request": "true", "HX-Request-Type": "partial"}
HISTORY_RESTORE = {
    "HX-Request": "true",
    "HX-Request-Type": "full",
    "HX-History-Restore-Request": "true",
}


def task_ids(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<li id="task-(\d+)"', html)]


async def htmx_post(client: Client, path: str, status: int = 200, **form: str) -> str:
    response = await client.post(path, form=form, headers=HX)
    assert response.status_code == status
    assert response.mimetype == "text/html"
    assert_varies(response.headers.get("Vary", ""))
    return await response.get_data(as_text=True)


async def create(client: Client, name: str) -> int:
    (task_id,) = task_ids(await htmx_post(client, "/", name=name))
    return task_id


def assert_varies(vary: str) -> None:
    names = {v.strip().lower() for v in vary.split(",")}
    assert {"hx-request", "hx-request-type"} <= names, vary


STATUS_RULE = re.compile(r'hx-status:(\w+)(?::inherited)?="([^"]*)"')


def status_rules(status: int) -> list[str]:
    """The `hx-status` rules in the templates that htmx would apply to an answer with
    `status` (exact code, `NNx` or `Nxx`)."""
    code = str(status)
    patterns = {code, code[:2] + "x", code[0] + "xx"}
    return [
        rule
        for template in (PROJECT_ROOT / "templates").rglob("*.html")
        for pattern, rule in STATUS_RULE.findall(template.read_text())
        if pattern in patterns
    ]


def oob_flash(html: str) -> str:
    match = re.search(
        r'<hx-partial hx-target="#flashes" hx-swap="innerHTML">(.*?)</hx-partial>', html, re.S
    )
    assert match, html
    return match.group(1)


@pytest.mark.parametrize(
    ("headers", "partial"),
    [
        ({"hx-request": "true", "hx-request-type": "partial"}, True),
        ({"hx-request": "true", "hx-request-type": "full"}, False),
        ({"hx-request": "true"}, False),
        ({"hx-request-type": "partial"}, False),
        (
            {
                "hx-request": "true",
                "hx-request-type": "partial",
                "hx-history-restore-request": "true",
            },
            False,
        ),
        ({}, False),
    ],
)
def test_wants_partial_only_for_targeted_htmx_swaps(headers: dict[str, str], partial: bool) -> None:
    assert wants_partial(headers) is partial


async def test_list_page_is_full_without_htmx_and_fragment_with_it(client: Client) -> None:
    full = await client.get("/")
    fragment = await client.get("/", headers=HX)
    for response in (full, fragment):
        assert response.status_code == 200
        assert_varies(response.headers["Vary"])
    full_html = await full.get_data(as_text=True)
    fragment_html = await fragment.get_data(as_text=True)
    assert full_html.startswith("<!doctype html>") and 'id="new-task"' in full_html
    assert fragment_html.lstrip().startswith('<section id="task-list"')
    assert "<html" not in fragment_html and 'id="flashes"' not in fragment_html


async def test_history_restore_gets_the_full_page(client: Client) -> None:
    response = await client.get("/", headers=HISTORY_RESTORE)
    html = await response.get_data(as_text=True)
    assert html.startswith("<!doctype html>") and 'id="task-list"' in html
    assert_varies(response.headers["Vary"])


async def test_create_returns_the_row_a_fresh_form_the_count_and_an_oob_flash(
    client: Client,
) -> None:
    html = await htmx_post(client, "/", name="  Buy milk ")
    assert html.lstrip().startswith('<li id="task-')
    assert 'value="Buy milk"' in html
    form = re.search(
        r'<hx-partial hx-target="#new-task" hx-swap="outerHTML">(.*?)</hx-partial>', html, re.S
    )
    assert form and 'id="new-task-name"' in form.group(1)
    new_task_input = form.group(1).split('id="new-task-name"')[1].split(">")[0]
    assert "value=" not in new_task_input, "form is cleared"
    assert "autofocus" in form.group(1), "focus goes back to the new-task input"
    assert (
        '<hx-partial hx-target="#task-summary" hx-swap="outerHTML">' in html and "1 task<" in html
    )
    assert "Added “Buy milk”." in oob_flash(html)
    assert "<html" not in html
    page = await (await client.get("/")).get_data(as_text=True)
    assert "Added" not in page, "an htmx flash never goes through the session"


async def test_invalid_name_is_422_with_the_form_and_its_message(client: Client) -> None:
    html = await htmx_post(client, "/", 422, name="   ")
    assert html.lstrip().startswith('<form id="new-task"')
    assert 'role="alert">Task name is required.</p>' in html
    assert 'aria-invalid="true"' in html
    assert task_ids(await (await client.get("/")).get_data(as_text=True)) == []


async def test_invalid_name_clears_the_flashes_instead_of_repeating_its_message(
    client: Client,
) -> None:
    """Like every other htmx answer, the 422 owns #flashes: no "Task deleted." left beside
    the form's message, and the message (an alert next to the field) is not said twice."""
    html = await htmx_post(client, "/", 422, name="")
    assert oob_flash(html).strip() == ""
    html = await htmx_post(client, f"/{await create(client, 'keep me')}/rename", 422, name="")
    assert oob_flash(html).strip() == ""


async def test_too_long_name_keeps_what_was_typed(client: Client) -> None:
    html = await htmx_post(client, "/", 422, name="x" * 501)
    assert "Task name must be at most 500 characters." in html
    assert f'value="{"x" * 501}"' in html


async def test_rename_returns_the_changed_row_and_an_oob_flash(client: Client) -> None:
    task_id = await create(client, "draft")
    html = await htmx_post(client, f"/{task_id}/rename", name="final")
    assert task_ids(html) == [task_id] and 'value="final"' in html
    assert "Renamed to “final”." in oob_flash(html)


async def test_row_controls_have_ids_so_focus_survives_the_swap(client: Client) -> None:
    """htmx 4 puts focus back on the element with the focused element's id after a swap."""
    task_id = await create(client, "focus")
    html = await htmx_post(client, f"/{task_id}/rename", name="focus")
    controls = re.findall(r"<(?:input|button|textarea)\b[^>]*>", html)
    assert any("<textarea" in control for control in controls)
    for control in controls:
        if 'type="hidden"' not in control and "Delete:" not in control:  # delete: see _summary
            assert re.search(rf'\bid="task-{task_id}-[\w-]+"', control), control


async def test_rename_to_blank_is_422_with_the_row_and_its_message(client: Client) -> None:
    task_id = await create(client, "keep me")
    html = await htmx_post(client, f"/{task_id}/rename", 422, name=" ")
    assert task_ids(html) == [task_id] and 'value="keep me"' in html
    assert (
        f'id="task-{task_id}-error" class="field-error" role="alert">Task name is required.'
        in html
    )


async def test_complete_and_reopen_return_the_changed_row(client: Client) -> None:
    task_id = await create(client, "chore")
    html = await htmx_post(client, f"/{task_id}/complete", done="1")
    assert f'<li id="task-{task_id}" class="task done">' in html
    html = await htmx_post(client, f"/{task_id}/complete", done="0")
    assert f'<li id="task-{task_id}" class="task">' in html
    assert oob_flash(html).strip() == "", "no message, and no earlier one left up"


async def test_delete_returns_no_row_but_the_count_and_an_oob_flash(client: Client) -> None:
    task_id = await create(client, "drop")
    html = await htmx_post(client, f"/{task_id}/delete")
    assert task_ids(html) == []
    assert "0 tasks" in html and "No tasks yet" in html
    assert "Task deleted." in oob_flash(html)


@pytest.mark.parametrize("action", ["delete", "complete", "rename"])
async def test_action_on_a_missing_task_is_410_with_a_flash(client: Client, action: str) -> None:
    html = await htmx_post(client, f"/999/{action}", 410, name="x")
    assert "That task no longer exists." in oob_flash(html)
    # One rule, inherited by every row from #tasks (the e2e tests see the row go).
    assert status_rules(410) == ["swap:delete"], "a row removes itself on this answer"


async def test_every_action_without_htmx_still_redirects(client: Client) -> None:
    for path, form in (("/", {"name": "a"}), ("/1/rename", {"name": "b"}), ("/1/delete", {})):
        response = await client.post(
            path, form=form, headers={"HX-Request": "true", "HX-Request-Type": "full"}
        )
        assert response.status_code == 303
        assert_varies(response.headers["Vary"])


def test_htmx_forms_also_work_without_javascript() -> None:
    """Every hx-post form also has method=post and the same action (progressive enhancement)."""
    for template in (PROJECT_ROOT / "templates").rglob("*.html"):
        for form in re.findall(r"<form\b[^>]*>", template.read_text()):
            if "hx-post" in form:
                action = re.search(r'\baction="([^"]+)"', form)
                assert 'method="post"' in form and action, (template, form)
                assert f'hx-post="{action.group(1)}"' in form, (template, form)


def test_templates_pass_the_htmx_4_upgrade_checker() -> None:
    checker = PROJECT_ROOT / "node_modules/htmx.org/dist/scripts/upgrade-check.py"
    assert checker.exists(), "run `make assets` (npm ci) first"
    result = subprocess.run(
        [sys.executable, str(checker), "--no-color", str(PROJECT_ROOT / "templates")],
        capture_output=True, text=True, check=False,
    )
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert re.search(r"Found 0 issue\(s\) in 0 of [1-9]\d* file\(s\)", report), report


def test_htmx_is_served_from_static_vendor_and_pinned_by_the_lock_file() -> None:
    vendored = PROJECT_ROOT / "static/vendor/htmx.min.js"
    shipped = PROJECT_ROOT / "node_modules/htmx.org/dist/htmx.min.js"
    assert vendored.read_bytes() == shipped.read_bytes()
    lock = (PROJECT_ROOT / "package-lock.json").read_text()
    assert re.search(r'"node_modules/htmx.org": \{\s*"version": "4\.', lock)


async def test_errors_under_htmx_go_to_the_flashes_not_into_the_row(client: Client) -> None:
    response = await client.post("/no/such/action", headers=HX)
    assert response.status_code == 404
    assert response.headers["HX-Retarget"] == "#flashes"
    assert response.headers["HX-Reswap"] == "innerHTML"
    html = await response.get_data(as_text=True)
    assert html.startswith('<p class="flash flash-error">') and "<html" not in html
    assert_varies(response.headers["Vary"])


async def test_error_pages_vary_on_the_htmx_headers(client: Client) -> None:
    """The same URL answers htmx with a flash fragment, so the full page says so too."""
    page = await client.get("/no/such/page")
    fragment = await client.get("/no/such/page", headers=HX)
    assert page.status_code == fragment.status_code == 404
    assert (await page.get_data(as_text=True)).startswith("<!doctype html>")
    for response in (page, fragment):
        assert_varies(response.headers.get("Vary", ""))


# Statuses the error helper answers an htmx form with (unknown route, wrong method, refused
# cross-origin, body too large, bug, database down), retargeted at #flashes.
ERROR_STATUSES = (400, 403, 404, 405, 413, 500, 503)


@pytest.mark.parametrize("status", ERROR_STATUSES)
def test_no_hx_status_rule_acts_on_an_error_helper_answer(status: int) -> None:
    """htmx applies HX-Retarget first and the source's hx-status rule after it, so a rule
    matching an error answer would act on #flashes (`swap:delete` would remove it)."""
    assert status_rules(status) == []


async def test_a_framework_404_from_a_row_form_is_only_a_flash(client: Client) -> None:
    task_id = await create(client, "stays")
    response = await client.post(f"/{task_id}/no-such-action", headers=HX)
    assert response.status_code == 404 and response.headers["HX-Retarget"] == "#flashes"
    assert status_rules(404) == [], "so the row's rules leave #flashes alone"
    assert task_ids(await (await client.get("/")).get_data(as_text=True)) == [task_id]

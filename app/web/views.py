"""The task list page and its forms.

Every action answers two ways from the same URL: a browser without JavaScript gets
post/redirect/get with a flash message; htmx gets the fragment that changed, with the
message out of band (never through the session, so a cached list page never holds a flash).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast
from urllib.parse import parse_qsl

from markupsafe import Markup
from quart import Response, flash, redirect, request, url_for
from quart_schema import hide
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest, UnsupportedMediaType

from app.db import DatabaseUnavailable
from app.htmx import VARY_HEADERS, add_vary, wants_partial
from app.state import get_tasks
from app.tasks.repository import ListedTask
from app.tasks.schemas import MAX_TASK_ID, InvalidNotes, InvalidTaskName, Task, is_task_id
from app.tasks.service import ALL_TASKS, LIST_TIMEOUT
from app.templating import render, render_fragments
from app.web import bp, page_url
from app.webcache.declaration import cached

TASK_GONE = "That task no longer exists."
FORM_TYPE = "application/x-www-form-urlencoded"
NAME_NOT_UTF8 = "Task name is not valid UTF-8 text."
NOTES_NOT_UTF8 = "Task notes are not valid UTF-8 text."


class FormNotUTF8(BadRequest):
    description = "The form is not valid UTF-8 text."


@bp.get("/")
@hide
@cached(LIST_TIMEOUT, depends_on=[ALL_TASKS], vary=VARY_HEADERS)
async def index() -> Response:
    """The newest tasks; `?before=<id>` pages back to older ones. htmx gets the list (or,
    for a next page, just its rows and link) instead of the page."""
    before = _cursor(request.args.get("before"))
    page = await get_tasks().list_page(before)
    if not wants_partial(request.headers):
        template = "tasks/index.html"
    else:
        template = "tasks/_list.html" if before is None else "tasks/_page.html"
    rendered = await _rendered_notes(page.tasks)
    body = render(template, page=page, root=page_url("web.index"), rendered=rendered)
    return add_vary(Response(body))


def _cursor(value: str | None) -> int | None:
    if value is None:
        return None
    digits = value.isascii() and value.isdigit() and len(value) <= len(str(MAX_TASK_ID))
    if not digits or not is_task_id(int(value)):
        raise BadRequest("The page link is not valid: 'before' must be a task id.")
    return int(value)


@bp.post("/")
@hide
async def create_task() -> Response:
    name = ""
    try:
        name = await _name()
        task = await get_tasks().create(name)
    except InvalidTaskName as error:
        return await _reply(
            str(error), "error", "tasks/_refused.html", 422, error=error, name=name, autofocus=True
        )
    return await _reply(f"Added “{task.name}”.", "success", "tasks/_created.html", task=task,
                        summary=True)


@bp.post("/<int:task_id>/rename")
@hide
async def rename_task(task_id: int) -> Response:
    try:
        task = await get_tasks().update(task_id, name=await _name())
    except InvalidTaskName as error:
        task = await get_tasks().get(task_id)
        if task is not None:
            return await _reply(
                str(error), "error", "tasks/_changed.html", 422, task=task, error=error
            )
    if task is None:
        return await _gone()
    return await _reply(f"Renamed to “{task.name}”.", "success", "tasks/_changed.html", task=task)


@bp.post("/<int:task_id>/notes")
@hide
async def edit_notes(task_id: int) -> Response:
    notes = None
    try:
        notes = await _notes()
        task = await get_tasks().update(task_id, notes=notes)
    except InvalidNotes as error:
        task = await get_tasks().get(task_id)
        if task is not None:
            return await _reply(
                str(error), "error", "tasks/_changed.html", 422, task=task, notes_error=error,
                draft=notes, opened=True,
            )
    if task is None:
        return await _gone()
    return await _reply("Notes saved.", "success", "tasks/_changed.html", task=task, opened=True)


@bp.post("/<int:task_id>/complete")
@hide
async def complete_task(task_id: int) -> Response:
    done = (await _form()).get("done", "1") != "0"
    task = await get_tasks().update(task_id, done=done)
    if task is None:
        return await _gone()
    return await _reply(None, "success", "tasks/_changed.html", task=task)


@bp.post("/<int:task_id>/delete")
@hide
async def delete_task(task_id: int) -> Response:
    await _form()  # none of it is used, but a form that is not text is refused here too
    if not await get_tasks().delete(task_id):
        return await _gone()
    return await _reply("Task deleted.", "success", "tasks/_removed.html", summary=True)


async def _form() -> MultiDict[str, str]:
    """The posted form, refused (400) unless it is UTF-8 text: Quart's parser would turn
    escaped bytes that are not UTF-8 into U+FFFD (a garbled name, stored) and raw ones into
    an empty form (a blank name, reported). The forms post `FORM_TYPE`, browsers and htmx
    alike; another type of body is refused (415) rather than parsed less strictly."""
    body = await request.get_data(cache=True, as_text=False, parse_form_data=False)
    if not body:
        return MultiDict()
    if request.mimetype != FORM_TYPE:
        raise UnsupportedMediaType(f"Send the form as {FORM_TYPE}.")
    try:
        return MultiDict(parse_qsl(body.decode(), keep_blank_values=True, errors="strict"))
    except UnicodeDecodeError:
        raise FormNotUTF8() from None


async def _name() -> str:
    """The form's task name; a form that is not UTF-8 text is refused as a name is."""
    try:
        return (await _form()).get("name", "")
    except FormNotUTF8:
        raise InvalidTaskName(NAME_NOT_UTF8) from None


async def _notes() -> str:
    """The form's notes, with the line breaks a browser sends (CRLF) as stored (LF); a form
    that is not UTF-8 text is refused as notes are."""
    try:
        notes = (await _form()).get("notes", "")
    except FormNotUTF8:
        raise InvalidNotes(NOTES_NOT_UTF8) from None
    return notes.replace("\r\n", "\n").replace("\r", "\n")


async def _rendered_notes(tasks: Sequence[ListedTask | Task]) -> dict[int, Markup]:
    """The HTML of the notes of each task that has some, by task id: cached fragments, one
    round trip for all (`render_fragments`)."""
    with_notes = [task for task in tasks if _id_and_notes(task)[1]]
    html = await render_fragments("tasks/_notes.html", with_notes, as_="task")
    ids = [_id_and_notes(task)[0] for task in with_notes]
    return dict(zip(ids, html, strict=True))


def _id_and_notes(task: ListedTask | Task) -> tuple[int, str]:
    return (task["id"], task["notes"]) if isinstance(task, dict) else (task.id, task.notes)


async def _gone() -> Response:
    """410, not 404: a row removes itself on this answer (`hx-status:410`), and a 404 from the
    error helper (unknown route) must not match that rule once retargeted at #flashes."""
    return await _reply(TASK_GONE, "error", "tasks/_removed.html", 410, summary=True)


async def _reply(
    message: str | None,
    category: str,
    fragment: str,
    status: int = 200,
    *,
    summary: bool = False,
    **context: object,
) -> Response:
    """The fragment for htmx (its template decides whether the message goes out of band),
    with the list's count when `summary`; otherwise flash the message and redirect to the
    list (whose page counts for itself)."""
    if wants_partial(request.headers):
        if summary:
            context.update(await _summary())
        task = context.get("task")
        if isinstance(task, Task):
            context["rendered"] = await _rendered_notes([task])
        flashes = [(category, message)] if message else []
        body = render(fragment, flashes=flashes, **context)
        return add_vary(Response(body, status=status))
    if message:
        await flash(message, category)
    # 303: the browser follows with a GET, so a reload never re-submits the form. Quart's
    # redirect is typed with werkzeug's Response; it returns the app's own Response class.
    return add_vary(cast(Response, redirect(url_for("web.index"), 303)))


async def _summary() -> dict[str, object]:
    """The count for the summary an htmx answer updates. The write before it has committed:
    if the count cannot be read now, the answer goes without it, since a 503 would tell the
    user that a done write had failed (and a retried create would store it twice)."""
    try:
        return {"counted": True, "total": await get_tasks().count()}
    except DatabaseUnavailable:
        return {"counted": False}

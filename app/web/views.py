"""The task list page and its forms, post/redirect/get with flash messages."""

from __future__ import annotations

from quart import flash, redirect, render_template, request, url_for
from quart_schema import hide
from werkzeug.wrappers.response import Response

from app.state import get_tasks
from app.tasks.schemas import InvalidTaskName
from app.web import bp

TASK_ID = "<int:task_id>"
TASK_GONE = "That task no longer exists."


@bp.get("/")
@hide
async def index() -> str:
    tasks = await get_tasks().all_tasks()
    return await render_template("tasks/index.html", tasks=tasks)


@bp.post("/")
@hide
async def create_task() -> Response:
    form = await request.form
    try:
        task = await get_tasks().create(form.get("name", ""))
    except InvalidTaskName as error:
        await flash(str(error), "error")
    else:
        await flash(f"Added “{task.name}”.", "success")
    return _back_to_list()


@bp.post(f"/{TASK_ID}/rename")
@hide
async def rename_task(task_id: int) -> Response:
    form = await request.form
    try:
        task = await get_tasks().update(task_id, name=form.get("name", ""))
    except InvalidTaskName as error:
        await flash(str(error), "error")
    else:
        await flash(f"Renamed to “{task.name}”." if task else TASK_GONE, _category(task))
    return _back_to_list()


@bp.post(f"/{TASK_ID}/complete")
@hide
async def complete_task(task_id: int) -> Response:
    form = await request.form
    done = form.get("done", "1") != "0"
    task = await get_tasks().update(task_id, done=done)
    if task is None:
        await flash(TASK_GONE, "error")
    return _back_to_list()


@bp.post(f"/{TASK_ID}/delete")
@hide
async def delete_task(task_id: int) -> Response:
    deleted = await get_tasks().delete(task_id)
    await flash("Task deleted." if deleted else TASK_GONE, "success" if deleted else "error")
    return _back_to_list()


def _category(task: object | None) -> str:
    return "success" if task is not None else "error"


def _back_to_list() -> Response:
    # 303: the browser follows with a GET, so a reload never re-submits the form.
    return redirect(url_for("web.index"), 303)

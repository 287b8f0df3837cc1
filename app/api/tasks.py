"""`/api/tasks`: list, create, get, update and delete tasks."""

from __future__ import annotations

from pydantic import BaseModel, Field
from quart import url_for
from quart_schema import validate_querystring, validate_response
from werkzeug.exceptions import NotFound

from app.api import bp
from app.api.body import json_body
from app.api.openapi import empty_response, headers, problems
from app.state import get_tasks
from app.tasks.schemas import MAX_BIGINT, Task, TaskCreate, TaskUpdate
from app.tasks.service import ALL_TASKS, LIST_TIMEOUT, ONE_TASK
from app.webcache.declaration import cached

MAX_OFFSET = MAX_BIGINT  # the databases overflow beyond it


class PageQuery(BaseModel):
    limit: int = Field(50, ge=1, le=100)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


class TaskList(BaseModel):
    """A page of tasks, and how many there are in all."""

    items: list[Task]
    total: int
    limit: int
    offset: int


@bp.get("/tasks")
@cached(LIST_TIMEOUT, depends_on=[ALL_TASKS])
@validate_querystring(PageQuery)
@validate_response(TaskList)
@headers(200, Link='`<...>; rel="next"`: the next page, when there is one.')
@problems(422, 503)
async def list_tasks(query_args: PageQuery) -> tuple[TaskList, int, dict[str, str]]:
    """List tasks in creation order, a page at a time."""
    page = await get_tasks().page(limit=query_args.limit, offset=query_args.offset)
    headers = {}
    if page.offset + page.limit < page.total:
        next_url = url_for("api.list_tasks", limit=page.limit, offset=page.offset + page.limit)
        headers["Link"] = f'<{next_url}>; rel="next"'
    body = TaskList(items=page.items, total=page.total, limit=page.limit, offset=page.offset)
    return body, 200, headers


@bp.post("/tasks")
@json_body(TaskCreate)
@validate_response(Task, 201)
@headers(201, Location="The new task's URL.")
@problems(503)
async def create_task(data: TaskCreate) -> tuple[Task, int, dict[str, str]]:
    """Create a task."""
    task = await get_tasks().create(data.name, data.notes)
    return task, 201, {"Location": url_for("api.get_task", task_id=task.id)}


@bp.get("/tasks/<int:task_id>")
@cached(LIST_TIMEOUT, depends_on=[ONE_TASK])
@validate_response(Task)
@problems(404, 503)
async def get_task(task_id: int) -> Task:
    """Get one task."""
    return _found(await get_tasks().get(task_id), task_id)


@bp.patch("/tasks/<int:task_id>")
@json_body(TaskUpdate)
@validate_response(Task)
@problems(404, 503)
async def update_task(task_id: int, data: TaskUpdate) -> Task:
    """Rename a task, mark it done or not done, and/or change its notes."""
    task = await get_tasks().update(task_id, **data.model_dump())
    return _found(task, task_id)


@bp.delete("/tasks/<int:task_id>")
@empty_response(204, "The task is deleted.")
@problems(404, 503)
async def delete_task(task_id: int) -> tuple[str, int]:
    """Delete a task."""
    if not await get_tasks().delete(task_id):
        raise NotFound(f"Task {task_id} does not exist.")
    return "", 204


def _found(task: Task | None, task_id: int) -> Task:
    if task is None:
        raise NotFound(f"Task {task_id} does not exist.")
    return task

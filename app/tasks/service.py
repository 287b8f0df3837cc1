"""The task list's use cases. Views call these; they never touch SQL or cache keys.

The service owns invalidation: every write commits first, then bumps the generation
topics the cached data depends on (`ALL_TASKS` for lists, `task_topic(id)` for
one task), so that a reader which raced the write can only have cached under a dead
generation. With a courier (the invalidation log, on PostgreSQL and MySQL) the write also
records those topics in its own transaction, so that another process delivers them
if this one cannot reach the cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter

from app.cache.service import CacheService
from app.db import Database, DatabaseUnavailable, read, transaction
from app.invalidation.courier import Courier
from app.invalidation.log import Invalidation
from app.tasks.repository import ListedTask, TaskRepository
from app.tasks.schemas import Task, clean_name, clean_notes

# Generation topics, for `@cached(depends_on=...)` views and memoized reads.
ALL_TASKS = "tasks"
ONE_TASK = "task-{task_id}"
LIST_TIMEOUT = 600
LIST_SOFT_TIMEOUT = 300

# The HTML list shows this many tasks a page (the tutorial's 10 and 100 fit on one).
PAGE_SIZE = 100

_tasks = TypeAdapter(list[Task])


def task_topic(task_id: int) -> str:
    return ONE_TASK.format(task_id=task_id)


def _topics(task_id: int | None) -> tuple[str, ...]:
    """What a write to `task_id` (unknown: `None`) invalidates."""
    return (ALL_TASKS,) if task_id is None else (ALL_TASKS, task_topic(task_id))


@dataclass(frozen=True)
class TaskPage:
    """A page of the API's list, in creation order."""

    items: list[Task]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True)
class ListPage:
    """A page of the HTML list, newest first; `next_before` is the cursor of the next
    (older) page, `None` on the last one. `total` is how many tasks there are when this
    page shows them all, else `None` (more than `PAGE_SIZE`: counting them all would make a
    page cost more the longer the list)."""

    tasks: list[ListedTask]
    next_before: int | None
    total: int | None


class TaskService:
    def __init__(
        self, database: Database, cache_service: CacheService, courier: Courier | None = None
    ) -> None:
        self.sessions = database.sessions
        self.reader = database.reader
        self.cache_service = cache_service
        self.courier = courier
        memoize = cache_service.memoize
        self._page = memoize(
            LIST_TIMEOUT, soft_timeout=LIST_SOFT_TIMEOUT, topics=[ALL_TASKS]
        )(self._load_page)
        self._count = memoize(LIST_TIMEOUT, topics=[ALL_TASKS])(self._load_count)
        self._task = memoize(LIST_TIMEOUT, topics=[ONE_TASK])(self._load_task)

    async def invalidation_backlog(self) -> int | None:
        """Rows in the invalidation log not yet delivered; None without the log, or while
        the database cannot be read."""
        if self.courier is None:
            return None
        try:
            return await self.courier.backlog()
        except DatabaseUnavailable:
            return None

    async def list_page(self, before: int | None = None) -> ListPage:
        """The newest `PAGE_SIZE` tasks older than id `before` (all: the first page).

        Not memoized: the page that shows it is cached whole (`@cached`), so a miss of that
        page after a write would miss here too, and pay the round trips of a second lookup."""
        tasks = await read(
            self.reader, lambda db: TaskRepository(db).newest(limit=PAGE_SIZE + 1, before=before)
        )
        more = len(tasks) > PAGE_SIZE
        del tasks[PAGE_SIZE:]
        next_before = tasks[-1]["id"] if more else None
        return ListPage(tasks, next_before, None if before or next_before else len(tasks))

    async def page(self, *, limit: int, offset: int) -> TaskPage:
        """A page of tasks in creation order, with the total; memoized."""
        data = await self._page(limit=limit, offset=offset)
        return TaskPage(_tasks.validate_python(data["items"]), data["total"], limit, offset)

    async def count(self) -> int | None:
        """How many tasks there are if they fit on one page, else `None`; memoized."""
        count = await self._count()
        return count if count <= PAGE_SIZE else None

    async def get(self, task_id: int) -> Task | None:
        data = await self._task(task_id=task_id)
        return None if data is None else Task.model_validate(data)

    async def create(self, name: str, notes: str = "") -> Task:
        """Store a new task; raises `InvalidTaskName` for a blank or too long name,
        `InvalidNotes` for notes that are too long or not text."""
        name, notes = clean_name(name), clean_notes(notes)
        return await self._write(lambda tasks: tasks.add(name, notes))

    async def update(
        self, task_id: int, *, name: str | None = None, done: bool | None = None,
        notes: str | None = None,
    ) -> Task | None:
        """Rename, (un)complete and/or change the notes of a task (each change gives it a
        new version); `None` when there is no such task. Raises as `create` does."""
        if name is not None:
            name = clean_name(name)
        if notes is not None:
            notes = clean_notes(notes)
        return await self._write(
            lambda tasks: tasks.update(task_id, name=name, done=done, notes=notes),
            task_id=task_id,
        )

    async def delete(self, task_id: int) -> bool:
        return await self._write(lambda tasks: tasks.delete(task_id), task_id=task_id)

    async def _write[R](
        self, change: Callable[[TaskRepository], Awaitable[R]], *, task_id: int | None = None
    ) -> R:
        """Run `change` in a transaction, then bump the list and the task it wrote.

        Shielded from the caller's cancellation (a client that hangs up mid-request): a
        write that committed must be invalidated, or the cache keeps serving what it
        replaced. A change that found nothing (`None`, `False`) invalidates nothing; one
        whose commit outcome is unknown invalidates anyway.
        """
        return await asyncio.shield(self._commit_then_bump(change, task_id))

    async def _commit_then_bump[R](
        self, change: Callable[[TaskRepository], Awaitable[R]], task_id: int | None
    ) -> R:
        result, invalidation = await self._commit(change, task_id, retry=True)
        if invalidation is not None:
            await self._deliver(invalidation, committed=True)
        return result

    async def _commit[R](
        self, change: Callable[[TaskRepository], Awaitable[R]], task_id: int | None, *,
        retry: bool,
    ) -> tuple[R, Invalidation | None]:
        """Run `change` in a transaction, recording what it invalidates in the same one.
        Once more on a fresh connection if the pooled one had died before the commit
        (nothing of it can have been stored)."""
        invalidation: Invalidation | None = None
        committing = False
        try:
            async with transaction(self.sessions) as session:
                result = await change(TaskRepository(session))
                if result is None or result is False:
                    return result, None
                # A new task's id too: SQLite may hand out a deleted id again, whose
                # entries must die.
                written = result.id if isinstance(result, Task) else task_id
                invalidation = Invalidation.of(_topics(written))
                if self.courier is not None:
                    await self.courier.record(session, invalidation)
                committing = True
        except DatabaseUnavailable as error:
            if committing and invalidation is not None:  # the commit may have gone through
                await self._deliver(invalidation, committed=False)
            elif retry and error.stale_connection:
                return await self._commit(change, task_id, retry=False)
            raise
        return result, invalidation

    async def _deliver(self, invalidation: Invalidation, *, committed: bool) -> None:
        if self.courier is None:
            await self.cache_service.bump(*invalidation.topics)
        else:
            await self.courier.deliver(invalidation, committed=committed)

    async def _load_page(self, *, limit: int, offset: int) -> dict[str, Any]:
        items, total = await read(
            self.reader, lambda db: TaskRepository(db).list(limit=limit, offset=offset)
        )
        return {"items": [task.to_data() for task in items], "total": total}

    async def _load_count(self) -> int:
        return await read(self.reader, lambda db: TaskRepository(db).count(up_to=PAGE_SIZE + 1))

    async def _load_task(self, *, task_id: int) -> dict[str, Any] | None:
        task = await read(self.reader, lambda db: TaskRepository(db).get(task_id))
        return None if task is None else task.to_data()

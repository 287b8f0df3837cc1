"""The task list's use cases. Views call these; they never touch SQL or cache keys."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.db import transaction
from app.tasks.repository import TaskRepository
from app.tasks.schemas import Task, clean_name


@dataclass(frozen=True)
class TaskPage:
    items: list[Task]
    total: int
    limit: int
    offset: int


class TaskService:
    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions

    async def all_tasks(self) -> list[Task]:
        """Every task in creation order (the HTML page)."""
        async with transaction(self.sessions) as session:
            return await TaskRepository(session).list()

    async def page(self, *, limit: int, offset: int) -> TaskPage:
        async with transaction(self.sessions) as session:
            tasks = TaskRepository(session)
            items = await tasks.list(limit=limit, offset=offset)
            total = await tasks.count()
        return TaskPage(items=items, total=total, limit=limit, offset=offset)

    async def get(self, task_id: int) -> Task | None:
        async with transaction(self.sessions) as session:
            return await TaskRepository(session).get(task_id)

    async def create(self, name: str) -> Task:
        """Store a new task; raises `InvalidTaskName` for a blank or too long name."""
        name = clean_name(name)
        async with transaction(self.sessions) as session:
            return await TaskRepository(session).add(name)

    async def update(
        self, task_id: int, *, name: str | None = None, done: bool | None = None
    ) -> Task | None:
        """Rename and/or (un)complete a task; `None` when there is no such task."""
        if name is not None:
            name = clean_name(name)
        async with transaction(self.sessions) as session:
            return await TaskRepository(session).update(task_id, name=name, done=done)

    async def delete(self, task_id: int) -> bool:
        async with transaction(self.sessions) as session:
            return await TaskRepository(session).delete(task_id)

"""All of the task list's SQL. Returns `Task` DTOs, never ORM objects."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.tasks.models import TaskRow
from app.tasks.schemas import Task

# The largest id a BIGINT holds; a bigger id (say, from a URL) names no task.
MAX_TASK_ID = 2**63 - 1


class TaskRepository:
    """Queries over table `task` inside the caller's session (and transaction)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def list(self, *, limit: int | None = None, offset: int = 0) -> list[Task]:
        query = select(TaskRow).order_by(TaskRow.id).offset(offset).limit(limit)
        rows = await self.session.scalars(query)
        return [_to_task(row) for row in rows]

    async def count(self) -> int:
        return await self.session.scalar(select(func.count()).select_from(TaskRow)) or 0

    async def get(self, task_id: int) -> Task | None:
        if not 0 < task_id <= MAX_TASK_ID:
            return None
        row = await self.session.get(TaskRow, task_id)
        return None if row is None else _to_task(row)

    async def add(self, name: str) -> Task:
        now = datetime.now(UTC)
        row = TaskRow(name=name, done=False, created_at=now, updated_at=now)
        self.session.add(row)
        await self.session.flush()
        return _to_task(row)

    async def update(
        self, task_id: int, *, name: str | None = None, done: bool | None = None
    ) -> Task | None:
        if not 0 < task_id <= MAX_TASK_ID:
            return None
        values: dict[str, object] = {"updated_at": datetime.now(UTC)}
        if name is not None:
            values["name"] = name
        if done is not None:
            values["done"] = done
        query = update(TaskRow).where(TaskRow.id == task_id).values(values).returning(TaskRow)
        row = (await self.session.execute(query)).scalar_one_or_none()
        return None if row is None else _to_task(row)

    async def delete(self, task_id: int) -> bool:
        if not 0 < task_id <= MAX_TASK_ID:
            return False
        result = await self.session.execute(delete(TaskRow).where(TaskRow.id == task_id))
        return result.rowcount > 0


def _to_task(row: TaskRow) -> Task:
    return Task(
        id=row.id,
        name=row.name,
        done=row.done,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
    )


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

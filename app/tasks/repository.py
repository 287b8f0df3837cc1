"""All of the task list's SQL, in SQLAlchemy Core: rows come back as plain data (`Task`
DTOs, or the `ListedTask` dicts a list page shows), never as ORM objects.

A repository runs on whatever it is given: an `AsyncSession` inside the caller's
transaction (writes) or an autocommit `AsyncConnection` (reads, one round trip each).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any, TypedDict, cast

from sqlalchemy import (
    CursorResult,
    Result,
    Row,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.tasks.models import TaskRow
from app.tasks.schemas import Task, is_task_id

TASK = cast(Table, TaskRow.__table__)  # typed FromClause; a mapped class's table is a Table
COLUMNS = (
    TASK.c.id, TASK.c.name, TASK.c.done, TASK.c.notes, TASK.c.created_at, TASK.c.updated_at,
    TASK.c.version,
)
# Computed once per statement by the database (an uncorrelated subquery), not once per row.
TOTAL = select(func.count()).select_from(TASK).scalar_subquery().label("total")
# The list's statements, built once: a page load then costs one execute. No total: a
# count reads every row, so a page would cost more the longer the list.
NEWEST = (
    select(TASK.c.id, TASK.c.name, TASK.c.done, TASK.c.notes, TASK.c.version)
    .order_by(TASK.c.id.desc())
    .limit(bindparam("limit"))
)
NEWEST_BEFORE = NEWEST.where(TASK.c.id < bindparam("before"))
IN_ORDER = select(*COLUMNS, TOTAL).order_by(TASK.c.id).offset(bindparam("offset"))
IN_ORDER_UP_TO = IN_ORDER.limit(bindparam("limit"))
COUNT = select(func.count()).select_from(TASK)
COUNT_UP_TO = select(func.count()).select_from(
    select(TASK.c.id).limit(bindparam("up_to")).subquery()
)
ONE = select(*COLUMNS).where(TASK.c.id == bindparam("task_id"))
# Writes: the SET and VALUES clauses are the keys of the parameters they are run with.
ADD = insert(TASK)
ADD_RETURNING = ADD.returning(*COLUMNS)
CHANGE = update(TASK).where(TASK.c.id == bindparam("task_id"))
CHANGE_RETURNING = CHANGE.returning(*COLUMNS)
REMOVE = delete(TASK).where(TASK.c.id == bindparam("task_id"))


class ListedTask(TypedDict):
    """What a row of the task list shows: JSON-able, so a page of them caches as it is.
    `version` as in `Task`."""

    id: int
    name: str
    done: bool
    notes: str
    version: str


class TaskRepository:
    """Queries over table `task` on the caller's session or connection."""

    def __init__(self, db: AsyncSession | AsyncConnection) -> None:
        self.db = db
        # MySQL has no RETURNING (MariaDB none on UPDATE): a write there reads its row back
        # in its own transaction. MariaDB takes that path too, so it tests MySQL's.
        dialect = db.get_bind().dialect if isinstance(db, AsyncSession) else db.dialect
        self._returning = dialect.update_returning

    async def newest(
        self, *, limit: int, before: int | None = None
    ) -> list[ListedTask]:
        """Up to `limit` tasks, newest first, older than id `before` if given. One
        statement, as cheap with a million tasks as with ten (keyset paging: the primary
        key's index is walked from `before`, no OFFSET to count past)."""
        if before is None:
            result = await self.db.execute(NEWEST, {"limit": limit})
        else:
            result = await self.db.execute(NEWEST_BEFORE, {"limit": limit, "before": before})
        return [
            {"id": row.id, "name": row.name, "done": row.done, "notes": row.notes,
             "version": row.version}
            for row in result
        ]

    async def list(self, *, limit: int | None = None, offset: int = 0) -> tuple[list[Task], int]:
        """A page of tasks in creation order, and how many there are in all (one statement
        unless the page is empty)."""
        if limit is None:
            result = await self.db.execute(IN_ORDER, {"offset": offset})
        else:
            result = await self.db.execute(IN_ORDER_UP_TO, {"offset": offset, "limit": limit})
        rows = result.all()
        total = rows[0].total if rows else await self.count()
        return [_to_task(row) for row in rows], total

    async def count(self, *, up_to: int | None = None) -> int:
        """How many tasks there are, or `up_to` if there are at least that many (which reads
        only that many rows)."""
        if up_to is None:
            return (await self.db.execute(COUNT)).scalar_one()
        return (await self.db.execute(COUNT_UP_TO, {"up_to": up_to})).scalar_one()

    async def get(self, task_id: int) -> Task | None:
        if not is_task_id(task_id):
            return None
        row = (await self.db.execute(ONE, {"task_id": task_id})).first()
        return None if row is None else _to_task(row)

    async def add(self, name: str, notes: str = "") -> Task:
        now = datetime.now(UTC)
        values = {"name": name, "done": False, "notes": notes, "created_at": now,
                  "updated_at": now, "version": new_version()}
        if self._returning:
            return _to_task((await self.db.execute(ADD_RETURNING, values)).one())
        key = _cursor(await self.db.execute(ADD, values)).inserted_primary_key
        assert key is not None  # typed Optional: a single-row INSERT always has one
        return await self._written(key[0])

    async def update(
        self, task_id: int, *, name: str | None = None, done: bool | None = None,
        notes: str | None = None,
    ) -> Task | None:
        """Change what is given, and give the task a new version."""
        if not is_task_id(task_id):
            return None
        values: dict[str, Any] = {
            "task_id": task_id, "updated_at": datetime.now(UTC), "version": new_version()
        }
        if name is not None:
            values["name"] = name
        if done is not None:
            values["done"] = done
        if notes is not None:
            values["notes"] = notes
        if not self._returning:
            written = _cursor(await self.db.execute(CHANGE, values)).rowcount
            return await self._written(task_id) if written else None
        row = (await self.db.execute(CHANGE_RETURNING, values)).first()
        return None if row is None else _to_task(row)

    async def _written(self, task_id: int) -> Task:
        """The row this transaction has just written, where there is no RETURNING."""
        return _to_task((await self.db.execute(ONE, {"task_id": task_id})).one())

    async def delete(self, task_id: int) -> bool:
        if not is_task_id(task_id):
            return False
        result = await self.db.execute(REMOVE, {"task_id": task_id})
        return _cursor(result).rowcount > 0


def new_version() -> str:
    """A task's version on insert and on every update: random, so never one it had before,
    nor one a deleted task with the same id had."""
    return secrets.token_urlsafe(16)


def _cursor(result: Result[*tuple[Any, ...]]) -> CursorResult[*tuple[Any, ...]]:
    """A DML statement's result: a session types it as a plain `Result`, but it is the
    connection's `CursorResult`, which has `rowcount` and `inserted_primary_key`."""
    return cast(CursorResult[*tuple[Any, ...]], result)


def _to_task(row: Row[*tuple[Any, ...]]) -> Task:
    return Task(
        id=row.id,
        name=row.name,
        done=row.done,
        notes=row.notes,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
        version=row.version,
    )


def _utc(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything we store is UTC.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

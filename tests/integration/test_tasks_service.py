"""The tasks service with its cache, on a real database: invalidation after each write and
stampede control, counting queries with a SQLAlchemy event listener."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import Session

from app.cache import CacheClient, KeyBuilder, MemoryBackend
from app.cache.service import CacheService
from app.db import Database, DatabaseUnavailable, open_database
from app.settings import Settings
from app.tasks.service import LIST_SOFT_TIMEOUT, TaskService
from tests.support.clock import Clock


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    database = open_database(Settings(database_url=database_url))
    yield database
    await database.close()


@pytest.fixture
def selects(database: Database) -> list[str]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "task" in statement:
            seen.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    return seen


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def tasks(database: Database, clock: Clock) -> TaskService:
    client = CacheClient(MemoryBackend(), keys=KeyBuilder("test"), clock=clock)
    return TaskService(database, CacheService(client, clock=clock))


async def stored_name(tasks: TaskService, task_id: int) -> str:
    task = await tasks.get(task_id)
    assert task is not None, f"task {task_id} is gone"
    return task.name


async def listed_names(tasks: TaskService) -> list[str]:
    """The names on the memoized page of the API's list."""
    return [task.name for task in (await tasks.page(limit=50, offset=0)).items]


async def test_every_write_is_visible_to_the_next_read(tasks: TaskService) -> None:
    assert await listed_names(tasks) == []
    task = await tasks.create("one")
    assert await listed_names(tasks) == ["one"]
    await tasks.update(task.id, name="uno")
    assert await stored_name(tasks, task.id) == "uno"
    assert [t.name for t in (await tasks.page(limit=10, offset=0)).items] == ["uno"]
    await tasks.update(task.id, done=True)
    assert (await tasks.page(limit=10, offset=0)).items[0].done is True
    assert await tasks.count() == 1
    await tasks.delete(task.id)
    assert await listed_names(tasks) == []
    assert await tasks.get(task.id) is None
    assert await tasks.count() == 0


async def test_reads_without_writes_query_the_database_once(
    tasks: TaskService, selects: list[str]
) -> None:
    await tasks.create("x")
    for _ in range(5):
        await tasks.page(limit=50, offset=0)
    assert len(selects) == 1


async def test_a_cold_list_read_by_100_at_once_is_queried_once(
    tasks: TaskService, selects: list[str]
) -> None:
    await tasks.create("x")
    results = await asyncio.gather(*(listed_names(tasks) for _ in range(100)))
    assert results == [["x"]] * 100
    assert len(selects) == 1


async def test_past_the_soft_ttl_all_get_stale_and_one_refresh_queries(
    tasks: TaskService, selects: list[str], clock: Clock
) -> None:
    await tasks.create("x")
    await tasks.page(limit=50, offset=0)
    clock.now += LIST_SOFT_TIMEOUT + 1
    before = len(selects)

    results = await asyncio.gather(*(listed_names(tasks) for _ in range(100)))
    assert results == [["x"]] * 100
    for _ in range(100):  # the refresh runs in the background
        if len(selects) > before:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    assert len(selects) - before == 1


async def test_a_write_cancelled_after_its_commit_still_invalidates(
    tasks: TaskService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client that hangs up while the write bumps its generations (Quart then cancels the
    view) must not leave the cache serving what the committed write replaced."""
    task = await tasks.create("old")
    assert await stored_name(tasks, task.id) == "old"
    assert await listed_names(tasks) == ["old"]
    bumping, release, bumped = asyncio.Event(), asyncio.Event(), asyncio.Event()
    bump = tasks.cache_service.bump

    async def paused_bump(*topics: str) -> None:
        bumping.set()
        await release.wait()
        await bump(*topics)
        bumped.set()

    monkeypatch.setattr(tasks.cache_service, "bump", paused_bump)
    writer = asyncio.create_task(tasks.update(task.id, name="new"))
    await bumping.wait()
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writer
    release.set()
    await asyncio.wait_for(bumped.wait(), 5)

    assert await stored_name(tasks, task.id) == "new"
    assert await listed_names(tasks) == ["new"]


class AckLost(Session):
    """A session whose commit goes through but whose caller hears of a lost connection."""


@event.listens_for(AckLost, "after_commit")
def _lose_the_ack(session: Session) -> None:
    raise OSError("connection reset by peer")


async def test_a_commit_with_an_unknown_outcome_still_invalidates(
    tasks: TaskService, database: Database
) -> None:
    task = await tasks.create("old")
    assert await listed_names(tasks) == ["old"]
    assert await stored_name(tasks, task.id) == "old"
    bind = database.sessions.kw["bind"]  # the transactions' engine (make_sessionmaker)
    lossy = async_sessionmaker(bind, expire_on_commit=False, sync_session_class=AckLost)

    with pytest.raises(DatabaseUnavailable):
        await TaskService(replace(database, sessions=lossy), tasks.cache_service).update(
            task.id, name="new"
        )

    assert await listed_names(tasks) == ["new"]
    assert await stored_name(tasks, task.id) == "new"

"""The repository's SQL on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from app.db import make_sessionmaker
from app.tasks.repository import TASK, TaskRepository
from tests.support.databases import EVERY_BACKEND

pytestmark = pytest.mark.parametrize("database_url", EVERY_BACKEND, indirect=True)


@pytest.fixture
async def session(database_url: str) -> AsyncIterator[AsyncSession]:
    engine = create_async_engine(database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            yield session
    finally:
        await engine.dispose()


async def test_add_returns_the_stored_task(session: AsyncSession) -> None:
    tasks = TaskRepository(session)
    task = await tasks.add("Buy milk")
    assert task.id > 0
    assert task.name == "Buy milk"
    assert task.done is False
    assert task.created_at.tzinfo is not None
    assert await tasks.get(task.id) == task


async def test_list_is_in_creation_order_with_limit_and_offset(session: AsyncSession) -> None:
    tasks = TaskRepository(session)
    added = [await tasks.add(f"task {n}") for n in range(5)]
    listed, total = await tasks.list()
    assert [t.id for t in listed] == [t.id for t in added] and total == 5
    listed, total = await tasks.list(limit=2, offset=1)
    assert [t.name for t in listed] == ["task 1", "task 2"] and total == 5
    assert await tasks.list(offset=5) == ([], 5)
    assert await tasks.count() == 5
    assert await tasks.count(up_to=3) == 3 and await tasks.count(up_to=9) == 5


async def test_newest_pages_back_by_id(session: AsyncSession) -> None:
    tasks = TaskRepository(session)
    added = [await tasks.add(f"task {n}") for n in range(5)]
    newest = await tasks.newest(limit=2)
    assert [t["id"] for t in newest] == [added[4].id, added[3].id]
    assert newest[0] == {"id": added[4].id, "name": "task 4", "done": False, "notes": "",
                         "version": added[4].version}
    older = await tasks.newest(limit=10, before=added[3].id)
    assert [t["id"] for t in older] == [added[2].id, added[1].id, added[0].id]
    assert await tasks.newest(limit=10, before=added[0].id) == []


async def test_update_changes_only_the_given_fields(session: AsyncSession) -> None:
    tasks = TaskRepository(session)
    task = await tasks.add("draft")
    renamed = await tasks.update(task.id, name="final")
    assert renamed is not None and renamed.name == "final" and renamed.done is False
    done = await tasks.update(task.id, done=True)
    assert done is not None and done.name == "final" and done.done is True
    # Each update moves updated_at forward (a round trip apart, so never the same
    # microsecond) and leaves created_at alone; what it returns is what is stored.
    assert task.updated_at < renamed.updated_at < done.updated_at
    assert renamed.created_at == done.created_at == task.created_at
    assert await tasks.get(task.id) == done


async def test_every_update_gives_a_new_version_and_notes_are_kept_exactly(
    session: AsyncSession,
) -> None:
    tasks = TaskRepository(session)
    notes = "# Plan\n\n- 🚀 *one*\n\t- [two](https://example.com)\r\n" + "é" * 9_950
    task = await tasks.add("draft", notes)
    renamed = await tasks.update(task.id, name="final")
    done = await tasks.update(task.id, done=True)
    cleared = await tasks.update(task.id, notes="")
    assert renamed is not None and done is not None and cleared is not None
    assert task.notes == renamed.notes == done.notes == notes and cleared.notes == ""
    versions = {task.version, renamed.version, done.version, cleared.version}
    assert len(versions) == 4 and all(len(v) == 22 for v in versions)
    assert await tasks.get(task.id) == cleared


async def test_a_reused_id_gets_a_new_version(session: AsyncSession) -> None:
    """SQLite hands out the id of the last row again once it is deleted."""
    tasks = TaskRepository(session)
    first = await tasks.add("first", "notes")
    assert await tasks.delete(first.id)
    second = await tasks.add("second", "notes")
    assert second.version != first.version


async def test_update_and_delete_of_a_missing_task(session: AsyncSession) -> None:
    tasks = TaskRepository(session)
    assert await tasks.update(12345, name="x") is None
    assert await tasks.delete(12345) is False
    assert await tasks.get(12345) is None


async def test_delete_removes_exactly_one_task(session: AsyncSession) -> None:
    tasks = TaskRepository(session)
    keep, drop = await tasks.add("keep"), await tasks.add("drop")
    assert await tasks.delete(drop.id) is True
    assert [t.id for t in (await tasks.list())[0]] == [keep.id]


@pytest.mark.parametrize(
    "name",
    [
        "Ünïcødé 🚀 <b>bold</b> ' \" ; DROP TABLE task; --",
        "🚀" * 500,  # 500 characters of 4 bytes each: utf8mb4, and a limit in characters
        "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 👩\u200d💻 🇫🇷 👍🏽",  # astral letters, a ZWJ sequence, flags, skin tones
        "e\u0301 a\u0308 o\u0302\u0323 " + "\u0301" * 20,  # combining marks, kept as sent
        "  Mixed CASE and spaces  ",
    ],
    ids=["markup", "500-emoji", "astral", "combining", "case-and-spaces"],
)
async def test_names_round_trip_exactly(session: AsyncSession, name: str) -> None:
    tasks = TaskRepository(session)
    task = await tasks.add(name)
    assert task.name == name
    got = await tasks.get(task.id)
    assert got is not None and got.name == name
    updated = await tasks.update(task.id, done=True)
    assert updated is not None and updated.name == name


async def test_names_compare_exactly_case_trailing_spaces_and_accents_included(
    session: AsyncSession,
) -> None:
    """As on PostgreSQL: by code point. MariaDB's default collation would fold case and
    accents, and its `_bin` ones still pad ('a' = 'a ')."""
    await TaskRepository(session).add("Café")
    for other in ("café", "CAFÉ", "Cafe", "Café ", "Cafe\u0301"):
        same = select(func.count()).select_from(TASK).where(TASK.c.name == other)
        assert (await session.execute(same)).scalar_one() == 0, other
    assert (await session.execute(select(TASK.c.id).where(TASK.c.name == "Café"))).all()


async def test_timestamps_are_utc_with_microseconds(session: AsyncSession) -> None:
    tasks = TaskRepository(session)
    before = datetime.now(UTC)
    task = await tasks.add("now")
    after = datetime.now(UTC)
    assert task.created_at.utcoffset() == timedelta(0)
    # Truncated to the second (MySQL's plain DATETIME), it would fall before `before`.
    assert before <= task.created_at == task.updated_at <= after
    assert await tasks.get(task.id) == task


@pytest.mark.parametrize("task_id", [0, -1, 2**63, 2**70])
async def test_ids_outside_bigint_name_no_task(session: AsyncSession, task_id: int) -> None:
    tasks = TaskRepository(session)
    assert await tasks.get(task_id) is None
    assert await tasks.update(task_id, done=True) is None
    assert await tasks.delete(task_id) is False

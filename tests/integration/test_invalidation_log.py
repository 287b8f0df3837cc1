"""The invalidation log, in process: what a write records, who delivers it, how often.

Each "process" here is what an app process holds (its own engine, memcached client, cache
service, courier and task service) on the run's PostgreSQL or MariaDB database and a real
memcached;
a process cut off from memcached reaches it through a proxy the test cuts. The HTTP view,
across two app processes, is in test_partial_partition.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.cache import CacheClient
from app.cache.generations import Generations
from app.cache.service import CacheService
from app.db import open_database, transaction
from app.invalidation import log
from app.invalidation.courier import Courier
from app.invalidation.log import Invalidation, InvalidationRow
from app.settings import Settings
from app.state import make_cache_client
from app.tasks.service import ALL_TASKS, TaskService, task_topic
from tests.support.databases import empty_tables
from tests.support.fake_servers import CutProxy
from tests.support.memcached import MemcachedProcess

pytestmark = pytest.mark.postgres

SOON = 5.0  # seconds: how long a test waits for something that must happen


@dataclass
class Process:
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    cache: CacheClient
    courier: Courier
    tasks: TaskService

    async def close(self) -> None:
        await self.cache.close()
        await self.engine.dispose()


@pytest.fixture(params=["postgres", "mariadb"])
def database(request: pytest.FixtureRequest) -> str:
    """The run's PostgreSQL or MariaDB database, emptied. LISTEN/NOTIFY is PostgreSQL's:
    on MariaDB the log is delivered by the poll alone."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    asyncio.run(empty_tables(url))
    return url


on_postgres = pytest.mark.parametrize("database", ["postgres"], indirect=True)


@pytest.fixture
async def processes(database: str) -> AsyncIterator[Callable[..., Awaitable[Process]]]:
    started: list[Process] = []

    async def start(memcached_address: str, **courier_options: Any) -> Process:
        settings = Settings(
            write_rate_limit=0,
            env="development",
            database_url=database,
            memcache_servers=(memcached_address,),
            cache_connect_timeout=0.5,
        )
        opened = open_database(settings)
        cache = make_cache_client(settings)
        service = CacheService(cache)
        courier = Courier(opened.sessions, service.bump, **courier_options)
        process = Process(
            opened.engine, opened.sessions, cache, courier, TaskService(opened, service, courier)
        )
        started.append(process)
        return process

    yield start
    for process in started:
        await process.close()


@pytest.fixture
async def proxy(memcached_server: MemcachedProcess) -> AsyncIterator[CutProxy]:
    proxy = await CutProxy(memcached_server.address).start()
    yield proxy
    await proxy.stop()


@asynccontextmanager
async def running(courier: Courier) -> AsyncIterator[None]:
    """The courier's loops, as an app process runs them, stopped (and their connections
    given back) before the test's database is dropped."""
    task = asyncio.create_task(courier.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def token(cache: CacheClient, topic: str) -> str | None:
    entry = await cache.get(Generations(cache).key(topic))
    return None if entry is None else entry.value


async def logged(process: Process) -> list[str]:
    """The topics in the log, one per row."""
    async with process.sessions() as session:
        rows = await session.execute(select(InvalidationRow.topic).order_by("id"))
        return list(rows.scalars())


async def log_size(process: Process) -> int:
    async with process.sessions() as session:
        count = select(func.count()).select_from(InvalidationRow)
        return (await session.execute(count)).scalar_one()


async def record_due_now(process: Process, *topics: str) -> None:
    """A committed write's rows, due at once (as if its writer had died after commit)."""
    async with transaction(process.sessions) as session:
        await log.record(session, Invalidation.of(topics), lease_ms=0)


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + SOON
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {SOON} s: {what}")
        await asyncio.sleep(0.02)


def sets(memcached: MemcachedProcess) -> int:
    """memcached's count of storage commands (set, add, cas) since it started."""
    stats = memcached.command(b"stats\r\n").decode().split("\r\n")
    return next(int(line.split()[2]) for line in stats if line.startswith("STAT cmd_set "))


async def test_a_write_records_what_it_invalidates_in_its_own_transaction(
    processes: Callable[..., Awaitable[Process]], proxy: CutProxy
) -> None:
    await proxy.cut()  # the writer cannot bump: its rows stay in the log
    writer = await processes(proxy.address)

    task = await writer.tasks.create("buy milk")
    assert await logged(writer) == [ALL_TASKS, task_topic(task.id)]

    assert await writer.tasks.update(task.id + 1, name="nothing there") is None
    assert not await writer.tasks.delete(task.id + 1)
    assert len(await logged(writer)) == 2  # a write that changed nothing records nothing


async def test_a_writer_that_reached_the_cache_forgets_its_rows(
    processes: Callable[..., Awaitable[Process]], memcached_server: MemcachedProcess
) -> None:
    writer = await processes(memcached_server.address)
    async with running(writer.courier):
        before = await token(writer.cache, ALL_TASKS)
        for n in range(5):
            await writer.tasks.create(f"task {n}")
        assert await token(writer.cache, ALL_TASKS) != before
        await eventually(lambda: _empty(writer), "the writer forgets its delivered rows")


async def _empty(process: Process) -> bool:
    return await log_size(process) == 0


async def test_delivered_by_two_processes_at_once_and_twice_by_one_the_token_changes_once(
    processes: Callable[..., Awaitable[Process]], memcached_server: MemcachedProcess
) -> None:
    # a claim's lease outlasts the slow bump below however slow the machine
    a = await processes(memcached_server.address, lease=5.0)
    b = await processes(memcached_server.address, lease=5.0)
    await a.cache.set(Generations(a.cache).key(ALL_TASKS), "before", 60)
    await record_due_now(a, ALL_TASKS)
    stored = sets(memcached_server)

    bump = a.courier.bump

    async def slow_bump(*topics: str) -> bool:  # others look while it is under way
        await asyncio.sleep(0.3)
        return await bump(*topics)

    async def later(delay: float, courier: Courier) -> int:
        await asyncio.sleep(delay)
        return await courier.deliver_due()

    a.courier.bump = slow_bump
    delivered = list(await asyncio.gather(
        a.courier.deliver_due(), b.courier.deliver_due(), later(0.1, b.courier),
        later(0.2, a.courier),
    ))
    delivered += [await a.courier.deliver_due(), await b.courier.deliver_due()]

    assert sorted(delivered) == [0, 0, 0, 0, 0, 1]
    assert sets(memcached_server) - stored == 1
    assert await token(b.cache, ALL_TASKS) not in (None, "before")
    assert await log_size(a) == 0


async def test_rows_of_one_topic_are_delivered_by_one_bump(
    processes: Callable[..., Awaitable[Process]], memcached_server: MemcachedProcess
) -> None:
    process = await processes(memcached_server.address)
    for _ in range(3):
        await record_due_now(process, ALL_TASKS, task_topic(7))
    stored = sets(memcached_server)

    assert await process.courier.deliver_due() == 6
    assert sets(memcached_server) - stored == 2  # one per topic
    assert await log_size(process) == 0


async def test_a_row_the_claimer_cannot_deliver_is_released_to_another_process(
    processes: Callable[..., Awaitable[Process]],
    proxy: CutProxy,
    memcached_server: MemcachedProcess,
) -> None:
    cut_off = await processes(proxy.address)
    other = await processes(memcached_server.address)
    await other.cache.set(Generations(other.cache).key(ALL_TASKS), "before", 60)
    await proxy.cut()
    await record_due_now(cut_off, ALL_TASKS)

    assert await cut_off.courier.deliver_due() == 0
    assert await logged(cut_off) == [ALL_TASKS]  # released: due now, not a lease from now
    assert await other.courier.deliver_due() == 1
    assert await token(other.cache, ALL_TASKS) != "before"
    assert await log_size(other) == 0


async def test_undeliverable_rows_shrink_to_one_per_topic(
    processes: Callable[..., Awaitable[Process]], proxy: CutProxy
) -> None:
    await proxy.cut()
    writer = await processes(proxy.address, lease=0.01)
    tasks = [await writer.tasks.create(f"task {n}") for n in range(20)]
    for task in tasks[:5]:
        await writer.tasks.update(task.id, done=True)
    assert await log_size(writer) == 50
    await asyncio.sleep(0.05)  # every row due

    assert await writer.courier.deliver_due() == 0  # none delivered; 29 rows covered by 21
    assert sorted(await logged(writer)) == sorted(
        [ALL_TASKS, *(task_topic(task.id) for task in tasks)]
    )


async def test_the_log_stays_small_under_sustained_writes(
    processes: Callable[..., Awaitable[Process]], memcached_server: MemcachedProcess
) -> None:
    writer = await processes(memcached_server.address)
    sizes: list[int] = []
    writing = True

    async def write(n: int) -> None:
        for round_ in range(40):
            task = await writer.tasks.create(f"writer {n} round {round_}")
            await writer.tasks.update(task.id, done=True)

    async def watch() -> None:
        while writing:
            sizes.append(await log_size(writer))
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    async with running(writer.courier):
        await asyncio.gather(*(write(n) for n in range(8)))
        writing = False
        await watcher
        await eventually(lambda: _empty(writer), "every delivered row deleted")
    # 1,280 rows written; at any moment only those of the writes in flight and of those
    # waiting to be forgotten: a few per writer (16 rows for the 8 writes in flight),
    # however many were written before
    assert max(sizes) <= 128, sizes


async def _listeners(process: Process) -> list[int]:
    async with process.engine.connect() as connection:
        rows = await connection.execute(text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND query LIKE 'LISTEN%'"
        ))
        return list(rows.scalars())


@on_postgres
async def test_a_notified_process_delivers_without_waiting_for_its_poll(
    processes: Callable[..., Awaitable[Process]],
    proxy: CutProxy,
    memcached_server: MemcachedProcess,
) -> None:
    await proxy.cut()
    writer = await processes(proxy.address)
    other = await processes(memcached_server.address, poll=3600)  # only NOTIFY wakes it
    async with running(writer.courier), running(other.courier):
        await eventually(lambda: _listening(other, 2), "both processes listen")
        await writer.tasks.create("buy milk")
        await eventually(lambda: _empty(other), "the notified process delivers")


async def _listening(process: Process, count: int) -> bool:
    """Whether `count` connections LISTEN on the process's database."""
    return len(await _listeners(process)) == count


@on_postgres
async def test_a_missed_notification_is_caught_by_the_poll(
    processes: Callable[..., Awaitable[Process]],
    proxy: CutProxy,
    memcached_server: MemcachedProcess,
) -> None:
    await proxy.cut()
    writer = await processes(proxy.address, listen_retry=3600)
    other = await processes(memcached_server.address, poll=0.5, listen_retry=3600)
    async with running(writer.courier), running(other.courier):
        await eventually(lambda: _listening(other, 2), "both processes listen")
        async with other.engine.connect() as connection:
            for pid in await _listeners(other):
                await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await eventually(lambda: _listening(other, 0), "the listeners are gone")

        await writer.tasks.create("buy milk")  # its NOTIFY reaches nobody
        await eventually(lambda: _empty(other), "the poll delivers")
        assert not await _listeners(other)  # not reconnected: the poll it was

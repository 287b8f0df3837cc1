"""The database pool and the memcached pools are bounded, and with every connection held a
request is a fast 503 (database) or a cache miss (memcached), never a hang.

The connections are held for real: checked out of the app's own engine, taken by requests
that wait on a table lock, taken out of the cache client's own pool, or stuck on a frozen
(SIGSTOPped) memcached.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy.engine import make_url

from app import create_app
from app.cache import MemcachedBackend
from app.cache.backends.pool import ConnectionPool, PoolTimeout
from app.settings import Settings
from app.state import find_state
from tests.support.databases import empty_tables
from tests.support.memcached import MemcachedProcess
from tests.support.servers import LiveServer

POOL_TIMEOUT = 0.5
STATEMENT_TIMEOUT = 2.0
OP_TIMEOUT = 0.75  # the cache's operation timeout (Settings' default, the tutorial's)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def timed(send: Any) -> tuple[Any, float]:
    started = time.monotonic()
    response = await send
    return response, time.monotonic() - started


# --- the database pool ------------------------------------------------------------------------


@pytest.fixture
async def small_pool_app(postgres_url: str) -> AsyncIterator[Quart]:
    """The app on PostgreSQL with two connections and no overflow, caching off (so that
    every request needs the database)."""
    await empty_tables(postgres_url)
    settings = Settings(
        write_rate_limit=0,
        env="development", database_url=postgres_url, cache_enabled=False,
        db_pool_size=2, db_max_overflow=0, db_pool_timeout=POOL_TIMEOUT,
    )
    app = create_app(settings)
    async with app.test_app():
        yield app


def requests(client: Client) -> dict[str, Any]:
    return {
        "GET /api/tasks": lambda: client.get("/api/tasks"),
        "POST /api/tasks": lambda: client.post("/api/tasks", json={"name": "x"}),
        "GET /": lambda: client.get("/"),
        "POST /": lambda: client.post("/", data="name=x", headers=FORM),
        "GET /readyz": lambda: client.get("/readyz"),
    }


@pytest.mark.postgres
async def test_with_every_database_connection_held_a_request_is_a_503_in_the_pool_timeout(
    small_pool_app: Quart,
) -> None:
    state = find_state(small_pool_app)
    assert state is not None
    client = small_pool_app.test_client()
    async with AsyncExitStack() as held:
        for _ in range(2):
            await held.enter_async_context(state.database.engine.connect())
        for what, send in requests(client).items():
            response, elapsed = await timed(send())
            assert response.status_code == 503, what
            assert POOL_TIMEOUT * 0.9 <= elapsed < POOL_TIMEOUT + 1.0, (what, elapsed)
    for what, send in requests(client).items():  # released: served again
        assert (await send()).status_code in (200, 201, 303), what


@pytest.fixture
def locked_server(postgres_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """hypercorn on PostgreSQL with two connections, no overflow and caching off."""
    asyncio.run(empty_tables(postgres_url))
    env = {
        "DATABASE_URL": postgres_url, "CACHE_ENABLED": "0", "DB_POOL_SIZE": "2",
        "DB_MAX_OVERFLOW": "0", "DB_POOL_TIMEOUT": str(POOL_TIMEOUT),
        "DB_STATEMENT_TIMEOUT": str(STATEMENT_TIMEOUT),
    }
    with LiveServer(env, log=tmp_path / "app.log") as server:
        yield server


async def waiting_on_locks(dsn: str, database: str) -> int:
    """How many connections to `database` wait on a lock (asked on a connection of its own:
    inside a transaction, pg_stat_activity keeps answering from its first snapshot)."""
    connection = await asyncpg.connect(dsn)
    try:
        waiting: int = await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = $1 AND wait_event_type = 'Lock'",
            database,
        )
        return waiting
    finally:
        await connection.close()


@pytest.mark.postgres
async def test_requests_stuck_on_a_lock_hold_the_pool_and_still_end_in_503s(
    locked_server: LiveServer, postgres_url: str
) -> None:
    """Two requests wait on a table lock with both connections: a third gets its 503 in the
    pool timeout, and the two stuck ones theirs in the statement timeout, not when (if
    ever) the lock goes."""
    database = make_url(postgres_url).database
    assert database
    dsn = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    admin = await asyncpg.connect(dsn)
    transaction = admin.transaction()
    await transaction.start()
    await admin.execute("LOCK TABLE task IN ACCESS EXCLUSIVE MODE")
    try:
        async with httpx.AsyncClient(base_url=locked_server.url, timeout=30) as http:
            started = time.monotonic()
            stuck = [asyncio.create_task(http.get("/api/tasks")) for _ in range(2)]
            while await waiting_on_locks(dsn, database) < 2:
                assert time.monotonic() - started < 5, "the requests never reached the lock"
                await asyncio.sleep(0.02)
            response, elapsed = await timed(http.get("/api/tasks"))
            assert response.status_code == 503
            assert response.headers["content-type"] == "application/problem+json"
            assert elapsed < POOL_TIMEOUT + 1.0, elapsed
            for response in await asyncio.gather(*stuck):
                assert response.status_code == 503
            assert time.monotonic() - started < STATEMENT_TIMEOUT + 1.5, "they waited on"
    finally:
        await transaction.rollback()
        await admin.close()
    async with httpx.AsyncClient(base_url=locked_server.url, timeout=10) as http:
        assert (await http.get("/api/tasks")).status_code == 200


# --- the memcached pools ----------------------------------------------------------------------


@pytest.fixture
async def cached_app(
    sqlite_database: str, memcached_server: MemcachedProcess
) -> AsyncIterator[Quart]:
    settings = Settings(
        write_rate_limit=0,
        env="development", database_url=sqlite_database,
        memcache_servers=(memcached_server.address,),
    )
    app = create_app(settings)
    async with app.test_app():
        yield app


def cache_requests(client: Client) -> dict[str, Any]:
    return {
        "GET /": lambda: client.get("/"),
        "GET / htmx": lambda: client.get(
            "/", headers={"HX-Request": "true", "HX-Request-Type": "partial"}
        ),
        "GET /api/tasks": lambda: client.get("/api/tasks"),
        "GET /api/tasks/1": lambda: client.get("/api/tasks/1"),
        "POST /api/tasks": lambda: client.post("/api/tasks", json={"name": "during"}),
        "POST /": lambda: client.post("/", data="name=during", headers=FORM),
        "GET /stats": lambda: client.get("/stats"),
    }


async def assert_answered_in_an_op_timeout(client: Client) -> None:
    for _ in range(2):  # after a write, and again
        for what, send in cache_requests(client).items():
            response, elapsed = await timed(send())
            assert response.status_code in (200, 201, 303), what
            assert elapsed < OP_TIMEOUT + 0.5, (what, round(elapsed, 3))


async def test_with_every_memcached_connection_held_requests_miss_within_an_op_timeout(
    cached_app: Quart,
) -> None:
    state = find_state(cached_app)
    assert state is not None
    client = cached_app.test_client()
    await client.post("/api/tasks", json={"name": "before"})
    backend = state.cache_client.backend
    assert isinstance(backend, MemcachedBackend)
    (server,) = backend.servers.values()
    held = [await server.pool.acquire(1) for _ in range(server.pool.size)]
    try:
        await assert_answered_in_an_op_timeout(client)
    finally:
        for connection in held:
            server.pool.release(connection, reusable=True)
    response, elapsed = await timed(client.get("/api/tasks"))
    assert response.status_code == 200 and elapsed < 0.2


async def test_with_memcached_frozen_requests_miss_within_an_op_timeout(
    cached_app: Quart, memcached_server: MemcachedProcess
) -> None:
    client = cached_app.test_client()
    await client.post("/api/tasks", json={"name": "before"})
    assert (await client.get("/")).status_code == 200  # connections open and pooled
    memcached_server.send_signal(signal.SIGSTOP)
    try:
        await assert_answered_in_an_op_timeout(client)
    finally:
        memcached_server.send_signal(signal.SIGCONT)


async def test_once_a_wait_for_a_connection_times_out_callers_fail_at_once_until_one_is_back(
    memcached_server: MemcachedProcess,
) -> None:
    pool = ConnectionPool("127.0.0.1", memcached_server.port, size=2, connect_timeout=1)
    held = [await pool.acquire(1) for _ in range(2)]
    started = time.monotonic()
    with pytest.raises(PoolTimeout):
        await pool.acquire(0.3)
    assert time.monotonic() - started >= 0.3  # the first caller waited
    started = time.monotonic()
    for _ in range(20):
        with pytest.raises(PoolTimeout):
            await pool.acquire(0.3)
    assert time.monotonic() - started < 0.1, "each caller waited out its deadline"
    # An invalidation still waits its turn: losing it would let stale entries be read.
    urgent = asyncio.create_task(pool.acquire(0.3, urgent=True))
    await asyncio.sleep(0.05)
    assert not urgent.done()
    pool.release(held.pop(), reusable=True)
    held.append(await urgent)
    pool.release(held.pop(), reusable=True)
    held.append(await pool.acquire(0.3))  # one came back: served again
    for connection in held:
        pool.release(connection, reusable=False)

"""Transport faults against fake loopback servers and real memcached processes.

The raw-aiomcache tests reproduce the two defects our layer fixes, so the checks used on
our client are shown able to fail.
"""

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import FrameType
from typing import Any, Protocol

import aiomcache
import pytest

from app.cache import CacheClient, KeyBuilder
from app.cache.backends.pool import PoolTimeout
from tests.integration.cache.support import FAST, MakeBackend, counted
from tests.support.fake_servers import Blackhole, FakeMemcached, Fault
from tests.support.memcached import MemcachedProcess

OP = FAST["op_timeout"]
KEYS = KeyBuilder("test")


class LoopBlocked(Exception):
    pass


@contextlib.contextmanager
def loop_watchdog(seconds: float = 3.0) -> Iterator[None]:
    """Raise `LoopBlocked` inside whatever runs if the test is still going after `seconds`.

    A SIGALRM handler runs between Python bytecodes, so it also interrupts a coroutine that
    spins without ever yielding to the event loop.
    """

    def fire(signum: int, frame: FrameType | None) -> None:
        raise LoopBlocked(f"the event loop made no progress for {seconds}s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.asynccontextmanager
async def ticker() -> AsyncIterator[list[int]]:
    """Counts 5 ms ticks: a ticking counter proves the loop ran other tasks meanwhile."""
    ticks = [0]

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.005)
            ticks[0] += 1

    task = asyncio.create_task(tick())
    try:
        yield ticks
    finally:
        task.cancel()


class FakeFactory(Protocol):
    """The `fake_factory` fixture: a started `FakeMemcached`, stopped at teardown."""

    def __call__(self, fault: Fault, *, delay: float = 0.0) -> Awaitable[FakeMemcached]: ...


@pytest.fixture
async def fake_factory() -> AsyncIterator[FakeFactory]:
    fakes: list[FakeMemcached] = []

    async def make(fault: Fault, *, delay: float = 0.0) -> FakeMemcached:
        fake = await FakeMemcached(fault, delay=delay).start()
        fakes.append(fake)
        return fake

    yield make
    for fake in fakes:
        await fake.stop()


async def test_raw_aiomcache_blocks_the_loop_on_eof(fake_factory: FakeFactory) -> None:
    fake = await fake_factory("close_after_command")
    raw = aiomcache.Client("127.0.0.1", fake.port, pool_size=1)
    with pytest.raises(LoopBlocked), loop_watchdog(1.0):
        await asyncio.wait_for(raw.delete(b"k"), 0.5)  # wait_for never fires: no yield
    await raw.close()


@pytest.mark.parametrize("op", ["get", "set", "add", "delete"])
async def test_server_closing_after_the_command_never_blocks(
    fake_factory: FakeFactory, make_backend: MakeBackend, op: str
) -> None:
    fake = await fake_factory("close_after_command")
    backend = make_backend([fake.address])
    cache_client = CacheClient(backend, keys=KEYS)
    key = KEYS.key("ns", "k")
    calls: dict[str, Callable[[], Awaitable[Any]]] = {
        "get": lambda: cache_client.get(key),
        "set": lambda: cache_client.set(key, 1, 60),
        "add": lambda: cache_client.add(key, 1, 60),
        "delete": lambda: cache_client.delete(key),
    }
    async with ticker() as ticks:
        with loop_watchdog(3.0):
            started_at = time.monotonic()
            assert await calls[op]() in (None, False)
            assert time.monotonic() - started_at < OP + 0.5
            before = ticks[0]
            await asyncio.sleep(0.05)
            assert ticks[0] > before
    assert fake.commands and counted(cache_client, "errors") == 1
    assert backend.servers[fake.address].state == "retrying"


async def test_raw_aiomcache_hands_a_late_reply_to_the_next_caller(
    fake_factory: FakeFactory
) -> None:
    fake = await fake_factory("delay_first", delay=0.6)
    raw = aiomcache.Client("127.0.0.1", fake.port, pool_size=1)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(raw.get(b"a"), OP)
    assert await raw.get(b"b") is None  # it read a's late reply: desynced
    await raw.close()


async def test_timed_out_command_closes_its_connection(
    fake_factory: FakeFactory, make_backend: MakeBackend
) -> None:
    fake = await fake_factory("delay_first", delay=0.6)
    backend = make_backend([fake.address], pool_size=1, retry_timeout=0.01, failure_limit=5)
    cache_client = CacheClient(backend, keys=KEYS)
    started_at = time.monotonic()
    assert await cache_client.get("a") is None
    assert time.monotonic() - started_at < OP + 0.5
    assert counted(cache_client, "timeouts") == 1
    await asyncio.sleep(0.02)  # past retry_timeout: the next call probes
    assert await backend.get("b") == b"value-of-b"
    await asyncio.sleep(0.7)  # a's late reply has been sent by now, on the old connection
    assert await backend.get("c") == b"value-of-c"
    assert fake.connections == 2


async def test_cancelled_command_closes_its_connection(
    fake_factory: FakeFactory, make_backend: MakeBackend
) -> None:
    fake = await fake_factory("delay_first", delay=0.6)
    backend = make_backend([fake.address], pool_size=1)
    task = asyncio.create_task(backend.get("a"))
    await fake.command_received.wait()  # the get is in flight, its reply delayed
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert backend.servers[fake.address].state == "up"  # the caller's cancellation, not a fault
    assert await backend.get("b") == b"value-of-b"
    await asyncio.sleep(0.7)
    assert await backend.get("c") == b"value-of-c"
    assert fake.connections == 2


async def test_garbage_reply_is_an_error_and_closes_the_connection(
    fake_factory: FakeFactory, make_backend: MakeBackend
) -> None:
    fake = await fake_factory("garbage")
    cache_client = CacheClient(make_backend([fake.address], retry_timeout=0.01), keys=KEYS)
    assert await cache_client.get("k") is None
    await asyncio.sleep(0.02)
    assert await cache_client.set("k", 1, 60) is False
    assert counted(cache_client, "errors") == 2
    assert fake.connections == 2


async def test_connect_deadline_on_a_server_that_never_accepts(make_backend: MakeBackend) -> None:
    hole = Blackhole()
    try:
        backend = make_backend([hole.address], connect_timeout=0.5)
        cache_client = CacheClient(backend, keys=KEYS)
        async with ticker() as ticks:
            started_at = time.monotonic()
            assert await cache_client.get("k") is None
            assert time.monotonic() - started_at < 0.5 + 0.5
            assert ticks[0] > 0
        assert counted(cache_client, "timeouts") == 1
        assert backend.servers[hole.address].state == "retrying"
    finally:
        hole.close()


async def test_waiting_for_a_pooled_connection_is_bounded(
    memcached: MemcachedProcess, make_backend: MakeBackend
) -> None:
    backend = make_backend([memcached.address], pool_size=1)
    cache_client = CacheClient(backend, keys=KEYS)
    pool = backend.servers[memcached.address].pool
    held = await pool.acquire(1.0)
    started_at = time.monotonic()
    assert await cache_client.get("k") is None
    assert time.monotonic() - started_at < OP + 0.5
    assert counted(cache_client, "timeouts") == 1
    # Saturated: the server is still up, but every call misses at once until a connection
    # comes back (see test_resource_limits), so the cache is not doing its job.
    assert backend.servers[memcached.address].state == "up" and not cache_client.healthy()
    pool.release(held, reusable=True)
    assert cache_client.healthy()
    assert await cache_client.set("k", 1, 60)


async def test_pool_hands_out_connections_first_come_first_served(
    memcached: MemcachedProcess, make_backend: MakeBackend
) -> None:
    backend = make_backend([memcached.address], pool_size=1)
    pool = backend.servers[memcached.address].pool
    held = await pool.acquire(1.0)
    order = []

    async def waiter(i: int) -> None:
        conn = await pool.acquire(5.0)
        order.append(i)
        await asyncio.sleep(0)
        pool.release(conn, reusable=True)

    tasks = []
    for i in range(6):
        tasks.append(asyncio.create_task(waiter(i)))
        await asyncio.sleep(0)
    pool.release(held, reusable=True)
    await asyncio.gather(*tasks)
    assert order == list(range(6))
    assert pool.connect_attempts == 1


async def test_each_waiter_times_out_at_its_own_deadline(
    memcached: MemcachedProcess, make_backend: MakeBackend
) -> None:
    backend = make_backend([memcached.address], pool_size=1)
    pool = backend.servers[memcached.address].pool
    held = await pool.acquire(1.0)
    patient = asyncio.create_task(pool.acquire(5.0))
    await asyncio.sleep(0)
    started_at = time.monotonic()
    with pytest.raises(PoolTimeout):
        await pool.acquire(0.1)  # queued behind a longer wait, yet bounded by its own
    assert time.monotonic() - started_at < 0.1 + 0.3
    pool.release(held, reusable=True)
    pool.release(await patient, reusable=True)  # the expired waiter took nothing
    assert pool.connect_attempts == 1


async def test_a_wait_timed_out_in_a_busy_pool_does_not_saturate_it(
    memcached: MemcachedProcess, make_backend: MakeBackend
) -> None:
    """Connections came back while it waited (a burst, not stuck holders): the next caller
    waits its turn instead of missing at once. A stuck pool does saturate (see
    test_resource_limits)."""
    backend = make_backend([memcached.address], pool_size=1)
    pool = backend.servers[memcached.address].pool
    held = await pool.acquire(1.0)
    ahead = asyncio.create_task(pool.acquire(5.0))
    await asyncio.sleep(0)
    behind = asyncio.create_task(pool.acquire(0.3))
    await asyncio.sleep(0.1)
    pool.release(held, reusable=True)  # a connection comes back, to the waiter ahead
    conn = await ahead
    with pytest.raises(PoolTimeout):
        await behind
    assert not pool.saturated
    later = asyncio.create_task(pool.acquire(2.0))
    await asyncio.sleep(0.05)
    assert not later.done()  # waiting, not refused
    pool.release(conn, reusable=True)
    pool.release(await later, reusable=True)


async def test_a_waiter_cancelled_after_being_handed_a_slot_gives_it_back(
    memcached: MemcachedProcess, make_backend: MakeBackend
) -> None:
    backend = make_backend([memcached.address], pool_size=1)
    pool = backend.servers[memcached.address].pool
    held = await pool.acquire(1.0)
    waiter = asyncio.create_task(pool.acquire(5.0))
    await asyncio.sleep(0)
    pool.release(held, reusable=True)  # hands the slot to the waiter...
    waiter.cancel()  # ...which is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await waiter
    conn = await asyncio.wait_for(pool.acquire(0.1), 1.0)  # the slot came back
    pool.release(conn, reusable=True)


async def test_killing_the_server_mid_run_fails_open(
    memcached_factory: Callable[..., MemcachedProcess], make_backend: MakeBackend
) -> None:
    server = memcached_factory()
    cache_client = CacheClient(make_backend([server.address], pool_size=8), keys=KEYS)
    keys = [KEYS.key("ns", i) for i in range(50)]
    for key in keys:
        assert await cache_client.set(key, key, 60)

    async def reader(i: int) -> float:
        worst = 0.0
        for _ in range(40):
            started_at = time.monotonic()
            await cache_client.get(keys[i])
            worst = max(worst, time.monotonic() - started_at)
            await asyncio.sleep(0.005)
        return worst

    tasks = [asyncio.create_task(reader(i)) for i in range(16)]
    await asyncio.sleep(0.05)
    server.kill()
    worst = max(await asyncio.gather(*tasks))
    assert worst < FAST["connect_timeout"] + OP + 0.5
    counts = cache_client.counters.snapshot()["total"]
    assert counts["hits"] > 0 and counts["errors"] + counts["unavailable"] > 0
    assert not cache_client.healthy()


async def test_repeated_failures_warn_once_a_window_and_are_all_counted(
    fake_factory: FakeFactory, make_backend: MakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    fake = await fake_factory("garbage")
    now = [1000.0]
    backend = make_backend([fake.address], retry_timeout=0.0, failure_limit=1000)
    cache_client = CacheClient(backend, keys=KEYS, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="app.cache")

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if "on key kind" in r.getMessage()]

    for _ in range(20):
        assert await cache_client.get("k") is None
    assert counted(cache_client, "errors") == 20
    assert len(warnings()) == 1
    assert "counted on /stats, not logged" in warnings()[0]
    now[0] += 10.0  # the next window: one more line
    assert await cache_client.get("k") is None
    assert len(warnings()) == 2

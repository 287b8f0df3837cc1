"""Three servers on the ring: spreading, grouping, and failover without remapping."""

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterable

import pytest

from app.cache import CacheClient, KeyBuilder, MemcachedBackend
from app.cache.backends import ServerUnavailable
from app.cache.backends.base import ServerState
from app.cache.backends.server import Server
from tests.integration.cache.support import FAST, MakeBackend, value_of
from tests.support.fake_servers import Blackhole, CutProxy, FakeMemcached
from tests.support.memcached import MemcachedProcess

KEYS = KeyBuilder("test")
DEADLINE = FAST["connect_timeout"] + FAST["op_timeout"] + 0.5


@pytest.fixture
def three(memcached_factory: Callable[..., MemcachedProcess]) -> list[MemcachedProcess]:
    return [memcached_factory() for _ in range(3)]


@pytest.fixture
async def proxy(memcached: MemcachedProcess) -> AsyncIterator[CutProxy]:
    """`memcached` behind a proxy that can cut and restore the connections to it."""
    proxy = await CutProxy(memcached.address).start()
    yield proxy
    await proxy.stop()


def state(server: Server) -> ServerState:
    """The server's state now (a function: mypy would keep what an earlier assert narrowed)."""
    return server.state


def owned(backend: MemcachedBackend, keys: Iterable[str]) -> dict[str, list[str]]:
    """`keys` by the address of the server that owns each."""
    by_server: dict[str, list[str]] = {address: [] for address in backend.servers}
    for key in keys:
        by_server[backend.server_for(key)].append(key)
    return by_server


async def test_keys_spread_over_all_servers_and_live_only_on_their_owner(
    three: list[MemcachedProcess], make_backend: MakeBackend
) -> None:
    backend = make_backend([s.address for s in three])
    cache_client = CacheClient(backend, keys=KEYS)
    keys = [KEYS.key("ns", i) for i in range(300)]
    for key in keys:
        assert await cache_client.set(key, key, 60)
    by_server = owned(backend, keys)
    assert all(len(mine) > 30 for mine in by_server.values())
    for process in three:
        for key in by_server[process.address][:10]:
            assert process.command(b"get %b\r\n" % key.encode()).startswith(b"VALUE")
        other = next(k for a, ks in by_server.items() if a != process.address for k in ks)
        assert process.command(b"get %b\r\n" % other.encode()) == b"END\r\n"
    found = await cache_client.get_many(keys)
    assert {k: e.value for k, e in found.items()} == {k: k for k in keys}


async def test_get_many_sends_one_get_per_server_concurrently(make_backend: MakeBackend) -> None:
    fakes = [await FakeMemcached("delay_first", delay=0.3).start() for _ in range(3)]
    try:
        backend = make_backend([f.address for f in fakes], op_timeout=2.0)
        keys = [f"k{i}" for i in range(60)]
        found = await backend.get_many(keys)
        assert found == {k: b"value-of-" + k.encode() for k in keys}
        assert [len(f.commands) for f in fakes] == [1, 1, 1]
        received = [f.received_at[0] for f in fakes]
        # every server had its command before the first (delayed) reply could exist
        assert max(received) < min(received) + 0.3
    finally:
        for fake in fakes:
            await fake.stop()


async def test_a_dead_server_is_skipped_not_remapped_then_rejoins_empty(
    three: list[MemcachedProcess], make_backend: MakeBackend
) -> None:
    backend = make_backend([s.address for s in three])
    cache_client = CacheClient(backend, keys=KEYS)
    keys = [KEYS.key("ns", i) for i in range(120)]
    for key in keys:
        await cache_client.set(key, key, 60)
    victim = three[0]
    lost, kept = owned(backend, keys)[victim.address], [
        k for k in keys if backend.server_for(k) != victim.address
    ]
    server = backend.servers[victim.address]
    victim.kill()

    started_at = time.monotonic()
    found = await cache_client.get_many(keys)
    assert time.monotonic() - started_at < DEADLINE
    assert set(found) == set(kept)
    assert state(server) == "retrying"

    # during retry_timeout: misses and dropped writes, with no connection attempt
    attempts = server.pool.connect_attempts
    for key in lost[:20]:
        started_at = time.monotonic()
        assert await cache_client.get(key) is None
        assert await cache_client.set(key, "new", 60) is False
        assert time.monotonic() - started_at < DEADLINE
    assert server.pool.connect_attempts == attempts
    for process in three[1:]:  # never remapped onto a survivor
        assert process.command(b"get %b\r\n" % lost[0].encode()) == b"END\r\n"

    # repeated failed probes make it dead; the survivors keep serving
    for _ in range(FAST["failure_limit"]):
        await asyncio.sleep(FAST["retry_timeout"] + 0.05)
        await cache_client.get(lost[0])
    assert state(server) == "dead"
    assert not cache_client.healthy()
    attempts = server.pool.connect_attempts
    assert await cache_client.get(lost[1]) is None
    assert server.pool.connect_attempts == attempts
    assert await value_of(cache_client, kept[0]) == kept[0]

    victim.start()  # same port, empty
    await asyncio.sleep(FAST["dead_timeout"] + 0.05)
    assert await cache_client.get(lost[0]) is None  # the probe: flush, then serve
    assert state(server) == "up" and server.flushes == 1
    assert await cache_client.set(lost[0], "fresh", 60)
    assert await value_of(cache_client, lost[0]) == "fresh"
    assert cache_client.healthy()


async def test_an_unreachable_server_never_serves_entries_from_before(
    memcached: MemcachedProcess, proxy: CutProxy, make_backend: MakeBackend
) -> None:
    backend = make_backend([proxy.address])
    cache_client = CacheClient(backend, keys=KEYS)
    server = backend.servers[proxy.address]
    key = KEYS.key("ns", "old")
    assert await cache_client.set(key, "before the outage", 60)

    await proxy.cut()
    assert await cache_client.get(key) is None
    for _ in range(FAST["failure_limit"] - 1):
        await asyncio.sleep(FAST["retry_timeout"] + 0.05)
        await cache_client.get(key)
    assert state(server) == "dead"
    assert memcached.command(b"get %b\r\n" % key.encode()).startswith(b"VALUE")

    await proxy.restore()  # same port; the server behind still holds the old entry
    assert await cache_client.get(key) is None  # still within dead_timeout: skipped
    await asyncio.sleep(FAST["dead_timeout"] + 0.05)
    assert await cache_client.get(key) is None  # rejoined: flushed before serving
    assert state(server) == "up" and server.flushes == 1
    assert memcached.command(b"get %b\r\n" % key.encode()) == b"END\r\n"


async def test_a_brief_outage_without_lost_writes_keeps_the_entries(
    proxy: CutProxy, make_backend: MakeBackend
) -> None:
    backend = make_backend([proxy.address], failure_limit=3)
    cache_client = CacheClient(backend, keys=KEYS)
    server = backend.servers[proxy.address]
    key = KEYS.key("ns", "k")
    assert await cache_client.set(key, "v", 60)
    await proxy.cut()
    assert await cache_client.get(key) is None
    assert state(server) == "retrying"
    await proxy.restore()
    await asyncio.sleep(FAST["retry_timeout"] + 0.05)
    assert await value_of(cache_client, key) == "v"
    assert state(server) == "up" and server.flushes == 0


async def test_a_write_dropped_while_retrying_forces_a_flush(
    proxy: CutProxy, make_backend: MakeBackend
) -> None:
    backend = make_backend([proxy.address], failure_limit=3)
    cache_client = CacheClient(backend, keys=KEYS)
    server = backend.servers[proxy.address]
    key = KEYS.key("ns", "k")
    assert await cache_client.set(key, "v1", 60)
    await proxy.cut()
    assert await cache_client.get(key) is None
    assert not await cache_client.delete(key)  # dropped: the server would keep serving v1
    await proxy.restore()
    await asyncio.sleep(FAST["retry_timeout"] + 0.05)
    assert await cache_client.get(key) is None
    assert state(server) == "up" and server.flushes == 1


async def test_an_invalidation_reaches_a_server_this_process_still_counts_failed(
    make_backend: MakeBackend, memcached_factory: Callable[..., MemcachedProcess]
) -> None:
    """Another process may already read from a server that came back: a write that
    replaces a generation token must not wait for this process's retry or dead timer."""
    server = memcached_factory()
    ours = make_backend([server.address], dead_timeout=60, retry_timeout=60)
    theirs = make_backend([server.address])
    server.kill()
    with pytest.raises(OSError):
        await ours.get("tasklist:1:gen:tasks")
    assert ours.servers[server.address].state != "up"
    server.start()

    with pytest.raises(ServerUnavailable):  # an ordinary write is still skipped
        await ours.set("tasklist:1:memoize:x", b"J1", 60)
    assert await ours.set("tasklist:1:gen:tasks", b'J"fresh"', 60, urgent=True) is True
    assert await theirs.get("tasklist:1:gen:tasks") == b'J"fresh"'
    assert ours.servers[server.address].state == "up"


async def test_invalidations_during_an_outage_share_one_connection_attempt(
    make_backend: MakeBackend
) -> None:
    """Urgent writes (generation bumps) probe a failed server rather than being dropped,
    but concurrent ones wait for the probe in flight: one attempt, one failure counted."""
    hole = Blackhole()
    try:
        backend = make_backend([hole.address], connect_timeout=0.5)
        cache_client = CacheClient(backend, keys=KEYS)
        server = backend.servers[hole.address]
        assert await cache_client.get(KEYS.key("ns", "k")) is None  # fails: now retrying
        attempts, failures = server.pool.connect_attempts, server.failures

        started_at = time.monotonic()
        stored = await asyncio.gather(
            *(cache_client.set(KEYS.key("gen", i), "token", 60, urgent=True) for i in range(5))
        )
        assert stored == [False] * 5
        assert time.monotonic() - started_at < 0.5 + FAST["op_timeout"] + 0.5
        assert server.pool.connect_attempts == attempts + 1
        assert server.failures == failures + 1
    finally:
        hole.close()


async def test_an_invalidation_waiting_for_a_probe_lands_after_its_flush(
    proxy: CutProxy, make_backend: MakeBackend
) -> None:
    backend = make_backend([proxy.address])
    cache_client = CacheClient(backend, keys=KEYS)
    server = backend.servers[proxy.address]
    key = KEYS.key("gen", "tasks")
    assert await cache_client.set(key, "old", 60)
    await proxy.cut()
    assert await cache_client.set(key, "lost", 60, urgent=True) is False  # stale from now on
    await proxy.restore()

    # a probe (it flushes first) and an invalidation that arrives while it runs
    probe = asyncio.create_task(cache_client.set(KEYS.key("ns", "x"), 1, 60, urgent=True))
    await asyncio.sleep(0)
    assert await cache_client.set(key, "new", 60, urgent=True)
    assert await probe
    assert server.flushes == 1
    assert await value_of(cache_client, key) == "new"

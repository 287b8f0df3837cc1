"""The fail-open facade over the in-process backend and over a backend that always fails."""

import asyncio

import aiomcache
import pytest

from app.cache import CacheClient, KeyBuilder, MemoryBackend, make_cache_client
from app.cache.backends import MemcachedBackend, ServerUnavailable
from app.cache.backends.base import MAX_TTL
from app.settings import Settings

keys = KeyBuilder()


class FailingBackend(MemoryBackend):
    """Every operation raises `exc` (a stand-in for any backend failure)."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc

    async def _raise(self, *args, **kwargs):
        raise self.exc

    get = get_many = set = add = delete = incr = touch = flush = server_stats = _raise


@pytest.mark.parametrize(
    ("exc", "metric"),
    [
        (TimeoutError(), "timeouts"),
        (ConnectionRefusedError(), "errors"),
        (aiomcache.ClientException("boom"), "errors"),
        (asyncio.IncompleteReadError(b"", 10), "errors"),
        (ServerUnavailable("a:1"), "unavailable"),
    ],
)
async def test_every_failure_is_a_counted_miss_or_noop(exc, metric):
    client = CacheClient(FailingBackend(exc), keys=keys)
    key = keys.key("tasks", "x")
    assert await client.get(key) is None
    assert await client.get_many([key, keys.key("tasks", "y")]) == {}
    assert await client.set(key, 1, 60) is False
    assert await client.add(key, 1, 60) is False
    assert await client.delete(key) is False
    assert await client.incr(key, ttl=60) is None
    assert await client.touch(key, 60) is False
    assert await client.flush() is False
    stats = await client.stats()
    assert stats["servers"] == []
    snapshot = client.counters.snapshot()
    assert snapshot["namespaces"]["tasks"][metric] == 8  # flush and stats have no namespace
    assert snapshot["total"][metric] == 10
    assert client.counters.snapshot()["namespaces"]["tasks"]["misses"] == 3


async def test_callers_cancellation_propagates():
    client = CacheClient(FailingBackend(asyncio.CancelledError()), keys=keys)
    with pytest.raises(asyncio.CancelledError):
        await client.get(keys.key("n", "x"))


async def test_memory_round_trip_and_counters():
    client = CacheClient(MemoryBackend(), keys=keys)
    key = keys.key("tasks", "list")
    assert await client.get(key) is None
    assert await client.set(key, None, 60, soft_ttl=10)
    entry = await client.get(key)
    assert entry is not None and entry.value is None
    assert entry.soft_expires == pytest.approx(entry.created + 10)
    total = client.counters.snapshot()["total"]
    assert (total["hits"], total["misses"], total["sets"]) == (1, 1, 1)
    assert client.healthy()


async def test_too_large_is_skipped_and_counted():
    client = CacheClient(MemoryBackend(), keys=keys, max_item_size=1000, compress_threshold=10**9)
    key = keys.key("n", "big")
    assert await client.set(key, "small", 60)
    assert await client.set(key, "x" * 2000, 60) is False
    assert await client.get(key) is None  # not the value the refused one replaced
    assert client.counters.total("too_large") == 1


@pytest.mark.parametrize("backend", [MemoryBackend, lambda: MemcachedBackend(["127.0.0.1:9"])])
@pytest.mark.parametrize("key", [42, b"k", ["k"]])
async def test_a_key_that_is_not_a_string_is_the_callers_error(backend, key):
    """Not a cache failure to hide: no memcached is reached (port 9 is never contacted)."""
    client = CacheClient(backend(), keys=keys)
    for call in (client.get(key), client.get_many([key]), client.set(key, 1, 60),
                 client.add(key, 1, 60), client.delete(key), client.touch(key, 60)):
        with pytest.raises(TypeError):
            await call
    assert client.counters.total("errors") == 0


@pytest.mark.parametrize("ttl", [0, -1, float("inf"), float("nan")])
async def test_ttls_must_be_finite_and_positive(ttl):
    client = CacheClient(MemoryBackend(), keys=keys)
    with pytest.raises(ValueError):
        await client.set(keys.key("n", "x"), 1, ttl)


async def test_long_ttls_are_clamped_to_30_days():
    seen = []

    class Recording(MemoryBackend):
        async def set(self, key, value, ttl):
            seen.append(ttl)
            return await super().set(key, value, ttl)

    client = CacheClient(Recording(), keys=keys)
    await client.set(keys.key("n", "x"), 1, 365 * 86400)
    await client.set(keys.key("n", "x"), 1, 1.2)
    assert seen == [MAX_TTL, 2]


async def test_garbage_entry_is_a_counted_miss():
    backend = MemoryBackend()
    client = CacheClient(backend, keys=keys)
    key = keys.key("n", "x")
    await backend.set(key, b"\x80garbage", 60)
    assert await client.get(key) is None
    assert client.counters.total("errors") == 1


def test_factory_picks_the_backend_without_io():
    memory = make_cache_client(Settings(cache_key_prefix="app1"))
    assert isinstance(memory.backend, MemoryBackend)
    assert memory.keys.prefix == "app1"
    remote = make_cache_client(
        Settings(memcache_servers=("10.0.0.1:11211", "10.0.0.2:11211"), cache_pool_size=4,
                 memcache_username="user", memcache_password="hunter2")
    )
    assert isinstance(remote.backend, MemcachedBackend)
    assert set(remote.backend.servers) == {"10.0.0.1:11211", "10.0.0.2:11211"}
    assert all(s.pool.connect_attempts == 0 for s in remote.backend.servers.values())
    assert "hunter2" not in repr(vars(remote.backend.servers["10.0.0.1:11211"].pool))


@pytest.mark.parametrize(
    "data",
    [
        b'O{"d":{"a":[1,2]},"t":1.5,"x":null}',
        b'O{"d":null,"t":1,"x":2}',  # None is a real value; int times
        b'O{"d":1,"t":1.5,"x":3.25}',
        b'O{"d":1,"t":"1.5","x":null}',  # wrong types: garbage
        b'O{"d":1,"t":1.5,"x":"soon"}',
        b'O{"d":1,"t":1.5}',  # not an envelope
        b'O{"d":1,"t":1.5,"x":null',  # truncated
        b'O{"d":1,"t":1.5,"x":null} }',
        b'O{"d":NaN,"t":1.5,"x":null}',  # orjson rejects, the stdlib reads NaN
        b'O{"d":123456789012345678901234,"t":1.5,"x":null}',
        b'J{"d":1,"t":1.5,"x":null}',
        b"O",
        b"",
        b"42",
        b"\x80garbage",
    ],
)
async def test_get_reads_exactly_what_decode_reads_and_counts_it(data):
    from app.cache.entry import decode

    backend = MemoryBackend()
    client = CacheClient(backend, keys=keys)
    key = keys.key("n", "x")
    await backend.set(key, data, 60)
    expected = decode(data)
    entry = await client.get(key)
    assert repr(entry) == repr(expected) and type(entry) is type(expected)  # NaN != NaN
    row = client.counters.snapshot()["namespaces"]["n"]
    if expected is None:
        assert (row["hits"], row["misses"], row["errors"]) == (0, 1, 1)
    else:
        assert (row["hits"], row["misses"], row["errors"]) == (1, 0, 0)


async def test_counters_stay_right_when_the_per_key_memo_starts_over(monkeypatch):
    from app.cache import client as client_module

    monkeypatch.setattr(client_module, "_ROWS_MAX", 3)
    client = CacheClient(MemoryBackend(), keys=keys)
    names = [keys.key("n", i) for i in range(10)]
    for _ in range(3):
        for name in names:
            assert await client.get(name) is None
    await client.set(names[0], "v", 60)
    assert (await client.get(names[0])).value == "v"
    client.counters.reset()
    assert (await client.get(names[0])).value == "v"
    assert await client.get_many(names[:2]) == {names[0]: (await client.get(names[0]))}
    row = client.counters.snapshot()["namespaces"]["n"]
    assert (row["hits"], row["misses"]) == (3, 1)
    assert len(client._rows) <= 3

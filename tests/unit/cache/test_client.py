"""The fail-open facade over the in-process backend and over a backend that always fails."""

import asyncio
from collections.abc import Callable, Sequence
from unittest.mock import ANY

import aiomcache
import pytest

from app.cache import CacheBackend, CacheClient, KeyBuilder, MemoryBackend
from app.cache.backends import MemcachedBackend, ServerStatus, ServerUnavailable
from app.cache.backends.base import MAX_TTL
from app.cache.entry import Entry, decode
from app.settings import Settings
from app.state import make_cache_client

keys = KeyBuilder()


class FailingBackend(MemoryBackend):
    """Every operation raises `exc` (a stand-in for any backend failure)."""

    def __init__(self, exc: BaseException) -> None:
        super().__init__()
        self.exc = exc

    async def get(self, key: str) -> bytes | None:
        raise self.exc

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        raise self.exc

    async def set(self, key: str, value: bytes, ttl: int, *, urgent: bool = False) -> bool:
        raise self.exc

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        raise self.exc

    async def delete(self, key: str, *, urgent: bool = False) -> bool:
        raise self.exc

    async def server_stats(self) -> list[ServerStatus]:
        raise self.exc


def unreachable_memcached() -> MemcachedBackend:
    """A memcached backend whose server is never contacted (port 9, discard)."""
    backend = make_cache_client(Settings(memcache_servers=("127.0.0.1:9",))).backend
    assert isinstance(backend, MemcachedBackend)
    return backend


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
async def test_every_failure_is_a_counted_miss_or_noop(exc: BaseException, metric: str) -> None:
    client = CacheClient(FailingBackend(exc), keys=keys)
    key = keys.key("tasks", "x")
    assert await client.get(key) is None
    assert await client.get_many([key, keys.key("tasks", "y")]) == {}
    assert await client.set(key, 1, 60) is False
    assert await client.add(key, 1, 60) is False
    assert await client.delete(key) is False
    stats = await client.stats()
    assert stats["servers"] == []
    snapshot = client.counters.snapshot()
    assert snapshot["kinds"]["tasks"][metric] == 6  # stats has no key kind
    assert snapshot["total"][metric] == 7
    assert client.counters.snapshot()["kinds"]["tasks"]["misses"] == 3


async def test_callers_cancellation_propagates() -> None:
    client = CacheClient(FailingBackend(asyncio.CancelledError()), keys=keys)
    with pytest.raises(asyncio.CancelledError):
        await client.get(keys.key("n", "x"))


async def test_memory_round_trip_and_counters() -> None:
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


async def test_too_large_is_skipped_and_counted() -> None:
    client = CacheClient(MemoryBackend(), keys=keys, max_item_size=1000, compress_threshold=10**9)
    key = keys.key("n", "big")
    assert await client.set(key, "small", 60)
    assert await client.set(key, "x" * 2000, 60) is False
    assert await client.get(key) is None  # not the value the refused one replaced
    assert client.counters.snapshot()["total"]["too_large"] == 1


@pytest.mark.parametrize("backend", [MemoryBackend, unreachable_memcached])
@pytest.mark.parametrize("key", [42, b"k", ["k"]])
async def test_a_key_that_is_not_a_string_is_the_callers_error(
    backend: Callable[[], CacheBackend], key: object
) -> None:
    """Not a cache failure to hide: no memcached is reached (port 9 is never contacted)."""
    client = CacheClient(backend(), keys=keys)
    not_a_key: str = key  # type: ignore[assignment]  # the caller's mistake under test
    for call in (client.get(not_a_key), client.get_many([not_a_key]),
                 client.set(not_a_key, 1, 60), client.add(not_a_key, 1, 60),
                 client.delete(not_a_key)):
        with pytest.raises(TypeError):
            await call
    assert client.counters.snapshot()["total"]["errors"] == 0


@pytest.mark.parametrize("ttl", [0, -1, float("inf"), float("nan")])
async def test_ttls_must_be_finite_and_positive(ttl: float) -> None:
    client = CacheClient(MemoryBackend(), keys=keys)
    with pytest.raises(ValueError):
        await client.set(keys.key("n", "x"), 1, ttl)


async def test_long_ttls_are_clamped_to_30_days() -> None:
    seen = []

    class Recording(MemoryBackend):
        async def set(self, key: str, value: bytes, ttl: int, *, urgent: bool = False) -> bool:
            seen.append(ttl)
            return await super().set(key, value, ttl)

    client = CacheClient(Recording(), keys=keys)
    await client.set(keys.key("n", "x"), 1, 365 * 86400)
    await client.set(keys.key("n", "x"), 1, 1.2)  # rounded up
    assert seen == [MAX_TTL, 2]


async def test_garbage_entry_is_a_counted_miss() -> None:
    backend = MemoryBackend()
    client = CacheClient(backend, keys=keys)
    key = keys.key("n", "x")
    await backend.set(key, b"\x80garbage", 60)
    assert await client.get(key) is None
    assert client.counters.snapshot()["total"]["errors"] == 1


def test_factory_picks_the_backend_without_io() -> None:
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
        b'O{"value":{"a":[1,2]},"created":1.5,"soft_expires":null}',
        b'O{"value":null,"created":1,"soft_expires":2}',  # None is a real value; int times
        b'O{"value":1,"created":1.5,"soft_expires":3.25}',
        b'O{"value":1,"created":"1.5","soft_expires":null}',  # wrong types: garbage
        b'O{"value":1,"created":1.5,"soft_expires":"soon"}',
        b'O{"value":1,"created":1.5}',  # not an envelope
        b'O{"value":1,"created":1.5,"soft_expires":null',  # truncated
        b'O{"value":1,"created":1.5,"soft_expires":null} }',
        b'O{"value":NaN,"created":1.5,"soft_expires":null}',  # orjson rejects, the stdlib reads
        b'O{"value":123456789012345678901234,"created":1.5,"soft_expires":null}',
        b'J{"value":1,"created":1.5,"soft_expires":null}',
        b'O{"d":{"a":[1,2]},"t":1.5,"x":null}',  # the one-letter fields of the release before
        b'O{"d":1,"t":"1.5","x":null}',
        b"O",
        b"",
        b"42",
        b"\x80garbage",
    ],
)
async def test_get_reads_exactly_what_decode_reads_and_counts_it(data: bytes) -> None:
    backend = MemoryBackend()
    client = CacheClient(backend, keys=keys)
    key = keys.key("n", "x")
    await backend.set(key, data, 60)
    expected = decode(data)
    entry = await client.get(key)
    assert repr(entry) == repr(expected) and type(entry) is type(expected)  # NaN != NaN
    row = client.counters.snapshot()["kinds"]["n"]
    if expected is None:
        assert (row["hits"], row["misses"], row["errors"]) == (0, 1, 1)
    else:
        assert (row["hits"], row["misses"], row["errors"]) == (1, 0, 0)


async def test_counters_stay_right_when_the_per_key_memo_starts_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.cache import client as client_module

    monkeypatch.setattr(client_module, "_ROWS_MAX", 3)
    client = CacheClient(MemoryBackend(), keys=keys)
    names = [keys.key("n", i) for i in range(10)]
    for _ in range(3):
        for name in names:
            assert await client.get(name) is None
    await client.set(names[0], "v", 60)
    assert await client.get(names[0]) == Entry("v", ANY)
    before = client.counters.snapshot()["kinds"]["n"]
    assert await client.get(names[0]) == Entry("v", ANY)
    assert await client.get_many(names[:2]) == {names[0]: (await client.get(names[0]))}
    after = client.counters.snapshot()["kinds"]["n"]
    assert (after["hits"] - before["hits"], after["misses"] - before["misses"]) == (3, 1)
    assert len(client._rows) <= 3

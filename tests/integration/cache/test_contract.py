"""One behaviour, two backends: the in-process LRU and a real memcached."""

import asyncio

from app.cache import CacheClient, Entry
from tests.integration.cache.support import counted, value_of

K = "test:1:ns:"


async def test_get_set_round_trip(cache_client: CacheClient) -> None:
    assert await cache_client.get(K + "a") is None
    assert await cache_client.set(K + "a", {"x": [1, 2]}, 60)
    entry = await cache_client.get(K + "a")
    assert isinstance(entry, Entry) and entry.value == {"x": [1, 2]}


async def test_none_is_cached(cache_client: CacheClient) -> None:
    assert await cache_client.set(K + "none", None, 60)
    entry = await cache_client.get(K + "none")
    assert entry is not None and entry.value is None


async def test_add_only_when_absent(cache_client: CacheClient) -> None:
    assert await cache_client.add(K + "lease", "first", 60)
    assert not await cache_client.add(K + "lease", "second", 60)
    assert await value_of(cache_client, K + "lease") == "first"


async def test_delete(cache_client: CacheClient) -> None:
    await cache_client.set(K + "d", 1, 60)
    assert await cache_client.delete(K + "d")
    assert not await cache_client.delete(K + "d")
    assert await cache_client.get(K + "d") is None


async def test_get_many_returns_found_only_and_dedupes(cache_client: CacheClient) -> None:
    await cache_client.set(K + "1", 1, 60)
    await cache_client.set(K + "3", 3, 60)
    found = await cache_client.get_many([K + "1", K + "2", K + "3", K + "1"])
    assert {key: entry.value for key, entry in found.items()} == {K + "1": 1, K + "3": 3}
    assert await cache_client.get_many([]) == {}


async def test_expiry(cache_client: CacheClient) -> None:
    await cache_client.set(K + "short", 1, 1)
    await cache_client.set(K + "long", 1, 30)
    await asyncio.sleep(2.2)  # memcached's clock ticks in whole seconds
    assert await cache_client.get(K + "short") is None
    assert await value_of(cache_client, K + "long") == 1


async def test_invalid_key_is_a_counted_miss(cache_client: CacheClient) -> None:
    assert await cache_client.get("has space") is None
    assert await cache_client.set("x" * 251, 1, 60) is False
    assert counted(cache_client, "errors") == 2
    assert cache_client.healthy()


async def test_stats(cache_client: CacheClient) -> None:
    await cache_client.set(K + "s", 1, 60)
    await cache_client.get(K + "s")
    stats = await cache_client.stats()
    assert stats["counters"]["kinds"]["ns"]["hits"] == 1
    [server] = stats["servers"]
    assert server["state"] == "up"
    for name in ("curr_items", "bytes", "evictions", "get_hits", "get_misses",
                 "limit_maxbytes", "uptime"):
        assert isinstance(server["stats"][name], int)
    assert int(server["stats"]["curr_items"]) >= 1  # memcached forgets flushed items lazily

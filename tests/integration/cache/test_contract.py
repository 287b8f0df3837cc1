"""One behaviour, two backends: the in-process LRU and a real memcached."""

import asyncio

from app.cache import Entry

K = "test:1:ns:"


async def test_get_set_round_trip(client):
    assert await client.get(K + "a") is None
    assert await client.set(K + "a", {"x": [1, 2]}, 60)
    entry = await client.get(K + "a")
    assert isinstance(entry, Entry) and entry.value == {"x": [1, 2]}


async def test_none_is_cached(client):
    assert await client.set(K + "none", None, 60)
    entry = await client.get(K + "none")
    assert entry is not None and entry.value is None


async def test_add_only_when_absent(client):
    assert await client.add(K + "lease", "first", 60)
    assert not await client.add(K + "lease", "second", 60)
    assert (await client.get(K + "lease")).value == "first"


async def test_delete(client):
    await client.set(K + "d", 1, 60)
    assert await client.delete(K + "d")
    assert not await client.delete(K + "d")
    assert await client.get(K + "d") is None


async def test_get_many_returns_found_only_and_dedupes(client):
    await client.set(K + "1", 1, 60)
    await client.set(K + "3", 3, 60)
    found = await client.get_many([K + "1", K + "2", K + "3", K + "1"])
    assert {key: entry.value for key, entry in found.items()} == {K + "1": 1, K + "3": 3}
    assert await client.get_many([]) == {}


async def test_incr_counters(client):
    assert await client.incr(K + "c") is None
    assert await client.incr(K + "c", 5, ttl=60) == 5
    assert await client.incr(K + "c", 2, ttl=60) == 7
    assert await client.incr(K + "c", -10) == 0
    assert (await client.get(K + "c")).value == 0


async def test_incr_on_an_envelope_fails_open(client):
    await client.set(K + "e", "text", 60)
    assert await client.incr(K + "e") is None
    assert client.counters.total("errors") == 1
    assert client.healthy()  # a refused command is not a server failure


async def test_touch(client):
    assert not await client.touch(K + "t", 60)
    await client.set(K + "t", 1, 60)
    assert await client.touch(K + "t", 120)


async def test_expiry_and_touch_extend(client):
    await client.set(K + "short", 1, 1)
    await client.set(K + "touched", 1, 1)
    assert await client.touch(K + "touched", 30)
    await asyncio.sleep(2.2)  # memcached's clock ticks in whole seconds
    assert await client.get(K + "short") is None
    assert (await client.get(K + "touched")).value == 1


async def test_flush(client):
    await client.set(K + "f", 1, 60)
    assert await client.flush()
    assert await client.get(K + "f") is None


async def test_invalid_key_is_a_counted_miss(client):
    assert await client.get("has space") is None
    assert await client.set("x" * 251, 1, 60) is False
    assert client.counters.total("errors") == 2
    assert client.healthy()


async def test_stats(client):
    await client.set(K + "s", 1, 60)
    await client.get(K + "s")
    stats = await client.stats()
    assert stats["counters"]["namespaces"]["ns"]["hits"] == 1
    [server] = stats["servers"]
    assert server["state"] == "up"
    for name in ("curr_items", "bytes", "evictions", "get_hits", "get_misses",
                 "limit_maxbytes", "uptime"):
        assert isinstance(server["stats"][name], int)
    assert server["stats"]["curr_items"] >= 1  # memcached forgets flushed items lazily

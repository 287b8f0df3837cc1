"""Built keys against a real memcached; value envelope edge cases end to end."""

import random
from collections.abc import AsyncIterator

import pytest

from app.cache import CacheClient, KeyBuilder
from app.cache.entry import COMPRESSED
from tests.integration.cache.support import MakeBackend, counted, value_of
from tests.support.memcached import MemcachedProcess

KEYS = KeyBuilder("tasklist", 1)
_rng = random.Random(1234)
FUZZ = [
    "", " ", "a b", "a_b", "a-b", "a.b", "a:b", "~", "*", "\t", "\r\n", "\x00", "\x7f", "\x9f",
    "ünïcödé", "日本語", "🙂🙃", "\u200b", "\ud800", "x" * 64, "x" * 65, "y" * 10_000,
    "/tasks?page=2&sort=due", "/tasks?sort=due&page=2", "DROP TABLE tasks;", "..", "-1", "0",
    *("".join(chr(_rng.randrange(0, 0x3000)) for _ in range(_rng.randrange(1, 300)))
      for _ in range(40)),
]
PART_SETS = [(part,) for part in FUZZ] + [
    ("page", 2, part) for part in FUZZ[:20]] + [tuple(FUZZ[:30]), tuple(range(80))]


MC = tuple[CacheClient, MemcachedProcess]


@pytest.fixture
async def mc(memcached: MemcachedProcess, make_backend: MakeBackend) -> AsyncIterator[MC]:
    cache_client = CacheClient(make_backend([memcached.address]), keys=KEYS)
    yield cache_client, memcached
    await cache_client.close()


@pytest.mark.parametrize("parts", PART_SETS, ids=range(len(PART_SETS)))
async def test_every_built_key_is_accepted_by_memcached(mc: MC, parts: tuple[object, ...]) -> None:
    cache_client, server = mc
    key = KEYS.key("fuzz", *parts)
    raw = key.encode("ascii")
    assert len(raw) <= 250 and all(33 <= byte < 127 for byte in raw)
    assert server.command(b"set %b 0 60 1\r\nx\r\n" % raw) == b"STORED\r\n"
    assert await cache_client.set(key, len(parts), 60)
    assert await value_of(cache_client, key) == len(parts)


def test_all_fuzzed_inputs_give_distinct_keys() -> None:
    built = [KEYS.key("fuzz", *parts) for parts in PART_SETS]
    assert len(set(built)) == len(PART_SETS)


async def test_none_round_trip(mc: MC) -> None:
    cache_client, _ = mc
    key = KEYS.key("v", "none")
    await cache_client.set(key, None, 60)
    entry = await cache_client.get(key)
    assert entry is not None and entry.value is None
    assert counted(cache_client, "hits") == 1


async def test_compressed_round_trip(mc: MC) -> None:
    cache_client, server = mc
    key = KEYS.key("v", "big")
    value = {"rows": [{"id": i, "title": f"task {i}", "done": i % 2 == 0} for i in range(2000)]}
    assert await cache_client.set(key, value, 60)
    stored = await cache_client.backend.get(key)
    assert stored is not None and stored[:1] == COMPRESSED
    assert await value_of(cache_client, key) == value


async def test_a_2mb_value_is_skipped_without_error(mc: MC) -> None:
    cache_client, _ = mc
    key = KEYS.key("v", "huge")
    assert await cache_client.set(key, "what the huge value replaces", 60)
    huge = _rng.randbytes(2 * 1024 * 1024).hex()  # incompressible
    assert await cache_client.set(key, huge, 60) is False
    assert await cache_client.get(key) is None
    assert counted(cache_client, "too_large") == 1
    assert counted(cache_client, "errors") == 0
    assert cache_client.healthy()


async def test_server_limit_below_ours_is_counted_too_large(mc: MC) -> None:
    cache_client, _ = mc
    cache_client.max_item_size = 4 * 1024 * 1024  # misconfigured: larger than memcached's -I
    key = KEYS.key("v", "huge")
    assert await cache_client.set(key, "what the huge value replaces", 60)
    assert await cache_client.set(key, _rng.randbytes(1536 * 1024).hex(), 60) is False
    assert await cache_client.get(key) is None
    assert counted(cache_client, "too_large") == 1
    assert cache_client.healthy()
    assert await cache_client.set(key, "small", 60)

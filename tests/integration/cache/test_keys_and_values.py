"""Built keys against a real memcached; value envelope edge cases end to end."""

import random

import pytest

from app.cache import CacheClient, KeyBuilder
from app.cache.entry import COMPRESSED

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


@pytest.fixture
async def mc(memcached, make_backend):
    client = CacheClient(make_backend([memcached.address]), keys=KEYS)
    yield client, memcached
    await client.close()


@pytest.mark.parametrize("parts", PART_SETS, ids=range(len(PART_SETS)))
async def test_every_built_key_is_accepted_by_memcached(mc, parts):
    client, server = mc
    key = KEYS.key("fuzz", *parts)
    raw = key.encode("ascii")
    assert len(raw) <= 250 and all(33 <= byte < 127 for byte in raw)
    assert server.command(b"set %b 0 60 1\r\nx\r\n" % raw) == b"STORED\r\n"
    assert await client.set(key, len(parts), 60)
    assert (await client.get(key)).value == len(parts)


def test_all_fuzzed_inputs_give_distinct_keys():
    built = [KEYS.key("fuzz", *parts) for parts in PART_SETS]
    assert len(set(built)) == len(PART_SETS)


async def test_none_round_trip(mc):
    client, _ = mc
    key = KEYS.key("v", "none")
    await client.set(key, None, 60)
    entry = await client.get(key)
    assert entry is not None and entry.value is None
    assert client.counters.total("hits") == 1


async def test_compressed_round_trip(mc):
    client, server = mc
    key = KEYS.key("v", "big")
    value = {"rows": [{"id": i, "title": f"task {i}", "done": i % 2 == 0} for i in range(2000)]}
    assert await client.set(key, value, 60)
    stored = await client.backend.get(key)
    assert stored[:1] == COMPRESSED
    assert (await client.get(key)).value == value


async def test_a_2mb_value_is_skipped_without_error(mc):
    client, _ = mc
    key = KEYS.key("v", "huge")
    assert await client.set(key, "what the huge value replaces", 60)
    huge = _rng.randbytes(2 * 1024 * 1024).hex()  # incompressible
    assert await client.set(key, huge, 60) is False
    assert await client.get(key) is None
    assert client.counters.total("too_large") == 1
    assert client.counters.total("errors") == 0
    assert client.healthy()


async def test_server_limit_below_ours_is_counted_too_large(mc):
    client, _ = mc
    client.max_item_size = 4 * 1024 * 1024  # misconfigured: larger than memcached's -I
    key = KEYS.key("v", "huge")
    assert await client.set(key, "what the huge value replaces", 60)
    assert await client.set(key, _rng.randbytes(1536 * 1024).hex(), 60) is False
    assert await client.get(key) is None
    assert client.counters.total("too_large") == 1
    assert client.healthy()
    assert await client.set(key, "small", 60)

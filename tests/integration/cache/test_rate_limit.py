"""A rate limit counted in the cache, on the in-process cache and a real memcached."""

from __future__ import annotations

import asyncio

from app.cache import CacheClient
from app.cache.rate_limit import RateLimit

WINDOW_START = 1_000_000 * 60.0


async def test_the_window_resets(cache_client: CacheClient) -> None:
    """Fixed windows of the wall clock: the count starts again at the next one."""
    now = [WINDOW_START + 10.0]
    limit = RateLimit(cache_client, "test", 3, window=60, clock=lambda: now[0])
    assert [await limit.take("client") for _ in range(3)] == [None, None, None]
    assert await limit.take("client") == 50.0  # the seconds left in the window
    assert await limit.take("another") is None
    now[0] += 50.0  # the next window
    assert await limit.take("client") is None


async def test_concurrent_takes_let_exactly_the_limit_through(cache_client: CacheClient) -> None:
    limit = RateLimit(cache_client, "burst", 30, window=60, clock=lambda: WINDOW_START)
    waits = await asyncio.gather(*(limit.take("client") for _ in range(100)))
    assert sum(wait is None for wait in waits) == 30


async def test_counting_fails_open(cache_client: CacheClient) -> None:
    """A counter that cannot be counted (here: a value that is not a number, as a key
    of another release's could be) lets the event through and is counted as an error."""
    key = cache_client.keys.key("limit", "broken", "client", int(WINDOW_START // 60))
    await cache_client.backend.set(key, b"not a number", 60)
    limit = RateLimit(cache_client, "broken", 1, window=60, clock=lambda: WINDOW_START)
    assert [await limit.take("client") for _ in range(3)] == [None, None, None]
    errors = cache_client.counters.snapshot()["kinds"]["limit"]["errors"]
    assert errors == 3

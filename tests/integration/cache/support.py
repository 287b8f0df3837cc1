"""Helpers of the cache's integration tests (the fixtures are in conftest.py)."""

from collections.abc import Sequence
from typing import Any, Protocol

from app.cache import CacheClient, MemcachedBackend

# Small deadlines keep fault tests fast; they are generous for loopback.
FAST: dict[str, Any] = dict(
    auth_mode="auto", connect_timeout=1.0, op_timeout=0.3, retry_timeout=0.3, dead_timeout=0.8,
    failure_limit=2, pool_size=4,
)


class MakeBackend(Protocol):
    """The `make_backend` fixture: `make_backend(servers, **overrides)` is a
    `MemcachedBackend` with `FAST`'s settings but for `overrides`, closed at teardown."""

    def __call__(self, servers: Sequence[str], **overrides: Any) -> MemcachedBackend: ...


async def value_of(cache_client: CacheClient, key: str) -> Any:
    """The value cached under `key`; fails the test on a miss."""
    entry = await cache_client.get(key)
    assert entry is not None, f"{key} is a miss"
    return entry.value


def counted(cache_client: CacheClient, metric: str) -> int:
    """How many times `metric` was counted, over every kind and server."""
    return cache_client.counters.snapshot()["total"][metric]

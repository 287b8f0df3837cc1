from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from app.cache import CacheClient, KeyBuilder, MemcachedBackend, MemoryBackend
from tests.integration.cache.support import FAST, MakeBackend
from tests.support.memcached import MemcachedProcess


@pytest.fixture
async def make_backend() -> AsyncIterator[MakeBackend]:
    made: list[MemcachedBackend] = []

    def make(servers: Sequence[str], **overrides: Any) -> MemcachedBackend:
        backend = MemcachedBackend(servers, **{**FAST, **overrides})
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


@pytest.fixture(params=["memory", "memcached"])
async def cache_client(
    request: pytest.FixtureRequest, make_backend: MakeBackend
) -> AsyncIterator[CacheClient]:
    backend: MemoryBackend | MemcachedBackend
    if request.param == "memory":
        backend = MemoryBackend(max_items=1000)
    else:
        backend = make_backend([request.getfixturevalue("memcached").address])
    cache_client = CacheClient(backend, keys=KeyBuilder("test"))
    yield cache_client
    await cache_client.close()


@pytest.fixture
def empty_cache(
    cache_client: CacheClient, request: pytest.FixtureRequest
) -> Callable[[], Awaitable[None]]:
    """`await empty_cache()` drops everything `cache_client` holds, as a memcached flush (or
    restart) does."""

    async def empty() -> None:
        if isinstance(cache_client.backend, MemoryBackend):
            await cache_client.backend.close()  # the in-process cache: its items are gone
        else:
            memcached: MemcachedProcess = request.getfixturevalue("memcached")
            memcached.flush()

    return empty

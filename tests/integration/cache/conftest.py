import pytest

from app.cache import CacheClient, KeyBuilder, MemcachedBackend, MemoryBackend

# Small deadlines keep fault tests fast; they are generous for loopback.
FAST = dict(connect_timeout=1.0, op_timeout=0.3, retry_timeout=0.3, dead_timeout=0.8,
            failure_limit=2, pool_size=4)


@pytest.fixture
async def make_backend():
    made = []

    def make(servers, **kwargs):
        backend = MemcachedBackend(servers, **{**FAST, **kwargs})
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


@pytest.fixture(params=["memory", "memcached"])
async def client(request, make_backend):
    if request.param == "memory":
        backend = MemoryBackend(max_items=1000)
    else:
        backend = make_backend([request.getfixturevalue("memcached").address])
    client = CacheClient(backend, keys=KeyBuilder("test"))
    yield client
    await client.close()

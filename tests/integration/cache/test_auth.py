"""The ASCII auth handshake against memcached -Y and a MemCachier-form shim."""

import logging

import pytest

from app.cache import CacheClient, KeyBuilder
from tests.support.fake_servers import MemcachierShim

USER, PASSWORD = "app-user", "s3cret-pass"
KEYS = KeyBuilder("test")


@pytest.fixture
def authed_memcached(memcached_factory, tmp_path):
    authfile = tmp_path / "authfile"
    authfile.write_text(f"{USER}:{PASSWORD}\n")
    return memcached_factory(authfile=authfile)


@pytest.fixture
async def shim(memcached):
    shim = await MemcachierShim(memcached.address, USER, PASSWORD).start()
    yield shim
    await shim.stop()


async def test_unauthenticated_commands_are_refused(authed_memcached, make_backend):
    assert authed_memcached.command(b"get x\r\n").startswith(b"CLIENT_ERROR")
    client = CacheClient(make_backend([authed_memcached.address]), keys=KEYS)
    assert not await client.set("k", 1, 60)


@pytest.mark.parametrize("mode", ["auto", "memcached"])
async def test_memcached_form_with_good_password(authed_memcached, make_backend, mode):
    backend = make_backend([authed_memcached.address], username=USER, password=PASSWORD,
                           auth_mode=mode)
    client = CacheClient(backend, keys=KEYS)
    assert await client.set("k", "v", 60)
    assert (await client.get("k")).value == "v"
    assert client.healthy()


@pytest.mark.parametrize("mode", ["auto", "memcachier"])
async def test_memcachier_form_through_the_shim(shim, make_backend, mode):
    backend = make_backend([shim.address], username=USER, password=PASSWORD, auth_mode=mode)
    client = CacheClient(backend, keys=KEYS)
    assert await client.set("k", "v", 60)
    assert (await client.get("k")).value == "v"
    assert shim.accepted >= 1 and shim.rejected == 0


async def test_auto_mode_remembers_the_form_that_worked(authed_memcached, make_backend):
    backend = make_backend([authed_memcached.address], username=USER, password=PASSWORD,
                           pool_size=2)
    pool = backend.servers[authed_memcached.address].pool
    client = CacheClient(backend, keys=KEYS)
    await client.set("k", 1, 60)
    assert pool.connect_attempts == 2  # MemCachier's form refused, then memcached's
    async with pool_both_busy(pool):
        pass
    assert pool.connect_attempts == 3  # the second connection went straight to memcached's


class pool_both_busy:
    """Hold every connection of a two-connection pool at once (forcing a new one)."""

    def __init__(self, pool):
        self.pool = pool

    async def __aenter__(self):
        self.conns = [await self.pool.acquire(1.0), await self.pool.acquire(1.0)]

    async def __aexit__(self, *exc):
        for conn in self.conns:
            self.pool.release(conn, reusable=True)


@pytest.mark.parametrize("mode", ["auto", "memcached", "memcachier"])
async def test_bad_password_fails_open_and_marks_the_server(
    authed_memcached, shim, make_backend, caplog, mode
):
    caplog.set_level(logging.DEBUG)
    target = shim.address if mode == "memcachier" else authed_memcached.address
    backend = make_backend([target], username=USER, password="wrong-password", auth_mode=mode)
    client = CacheClient(backend, keys=KEYS)
    assert await client.set("k", 1, 60) is False
    assert await client.get("k") is None
    assert backend.servers[target].state == "retrying"
    assert client.counters.total("errors") == 1 and client.counters.total("unavailable") == 1
    assert "wrong-password" not in caplog.text and USER not in caplog.text
    assert "wrong-password" not in repr(backend.servers[target].pool.__dict__)


async def test_shim_refuses_memcached_form(shim, make_backend):
    backend = make_backend([shim.address], username=USER, password=PASSWORD,
                           auth_mode="memcached")
    client = CacheClient(backend, keys=KEYS)
    assert await client.set("k", 1, 60) is False
    assert shim.rejected == 1 and shim.accepted == 0

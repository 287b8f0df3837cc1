"""The ASCII auth handshake against memcached -Y, a MemCachier-form shim and an open
memcached (which must never be left holding readable credentials)."""

import asyncio
import logging
import traceback
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType

import pytest

from app.cache import CacheClient, KeyBuilder
from app.cache.backends.auth import AuthenticationFailed, AuthMode, Credentials
from app.cache.backends.pool import ConnectionPool
from app.cache.backends.protocol import Connection
from tests.integration.cache.support import MakeBackend, counted, value_of
from tests.support.fake_servers import MemcachierShim
from tests.support.memcached import MemcachedProcess

USER, PASSWORD = "app-user", "s3cret-pass"
KEYS = KeyBuilder("test")


@pytest.fixture
def authed_memcached(
    memcached_factory: Callable[..., MemcachedProcess], tmp_path: Path
) -> MemcachedProcess:
    authfile = tmp_path / "authfile"
    authfile.write_text(f"{USER}:{PASSWORD}\n")
    return memcached_factory(authfile=authfile)


@pytest.fixture
async def shim(memcached: MemcachedProcess) -> AsyncIterator[MemcachierShim]:
    shim = await MemcachierShim(memcached.address, USER, PASSWORD).start()
    yield shim
    await shim.stop()


async def test_unauthenticated_commands_are_refused(
    authed_memcached: MemcachedProcess, make_backend: MakeBackend
) -> None:
    assert authed_memcached.command(b"get x\r\n").startswith(b"CLIENT_ERROR")
    cache_client = CacheClient(make_backend([authed_memcached.address]), keys=KEYS)
    assert not await cache_client.set("k", 1, 60)


@pytest.mark.parametrize("mode", ["auto", "memcached"])
async def test_memcached_form_with_good_password(
    authed_memcached: MemcachedProcess, make_backend: MakeBackend, mode: AuthMode
) -> None:
    backend = make_backend([authed_memcached.address], username=USER, password=PASSWORD,
                           auth_mode=mode)
    cache_client = CacheClient(backend, keys=KEYS)
    assert await cache_client.set("k", "v", 60)
    assert await value_of(cache_client, "k") == "v"
    assert cache_client.healthy()


@pytest.mark.parametrize("mode", ["auto", "memcachier"])
async def test_memcachier_form_through_the_shim(
    shim: MemcachierShim, make_backend: MakeBackend, mode: AuthMode
) -> None:
    backend = make_backend([shim.address], username=USER, password=PASSWORD, auth_mode=mode)
    cache_client = CacheClient(backend, keys=KEYS)
    assert await cache_client.set("k", "v", 60)
    assert await value_of(cache_client, "k") == "v"
    # auto: memcached's form first, refused (a failed login for "_ascii_auth"), then MemCachier's
    assert shim.accepted == 1 and shim.rejected == (1 if mode == "auto" else 0)


async def test_auto_mode_remembers_the_form_that_worked(
    authed_memcached: MemcachedProcess, make_backend: MakeBackend
) -> None:
    backend = make_backend([authed_memcached.address], username=USER, password=PASSWORD,
                           pool_size=2)
    pool = backend.servers[authed_memcached.address].pool
    cache_client = CacheClient(backend, keys=KEYS)
    await cache_client.set("k", 1, 60)
    assert pool.connect_attempts == 1  # memcached's form, tried first, accepted
    async with pool_both_busy(pool):
        pass
    assert pool.connect_attempts == 2


async def test_auto_mode_falls_back_to_memcachiers_form_and_remembers_it(
    shim: MemcachierShim, make_backend: MakeBackend
) -> None:
    backend = make_backend([shim.address], username=USER, password=PASSWORD, pool_size=2)
    pool = backend.servers[shim.address].pool
    cache_client = CacheClient(backend, keys=KEYS)
    assert await cache_client.set("k", 1, 60)
    assert pool.connect_attempts == 2 and (shim.rejected, shim.accepted) == (1, 1)
    async with pool_both_busy(pool):
        pass
    assert pool.connect_attempts == 3  # the second connection went straight to MemCachier's
    assert (shim.rejected, shim.accepted) == (1, 2)


async def test_first_connections_try_the_wrong_form_once(
    shim: MemcachierShim, make_backend: MakeBackend
) -> None:
    backend = make_backend([shim.address], username=USER, password=PASSWORD, pool_size=4)
    cache_client = CacheClient(backend, keys=KEYS)
    assert all(await asyncio.gather(*(cache_client.set(f"k{i}", i, 60) for i in range(16))))
    assert shim.rejected == 1 and 1 <= shim.accepted <= 4


def test_memcached_form_is_an_already_expired_set(
    authed_memcached: MemcachedProcess, memcached: MemcachedProcess
) -> None:
    """The raw command: -Y ignores the exptime -1, an open server stores nothing readable."""
    good = Credentials(USER, PASSWORD).command("memcached")
    assert good.startswith(b"set _ascii_auth 0 -1 20\r\n")
    assert authed_memcached.command(b"get k\r\n", auth=good) == b"END\r\n"
    bad = Credentials(USER, "wrong-password").command("memcached")
    assert authed_memcached.command(b"get k\r\n", auth=bad) == b"CLIENT_ERROR unauthenticated\r\n"
    assert memcached.command(good) == b"STORED\r\n"
    assert memcached.command(b"get _ascii_auth\r\n") == b"END\r\n"


@pytest.mark.parametrize("mode", ["auto", "memcached"])
async def test_an_open_server_is_left_no_readable_credentials(
    memcached: MemcachedProcess, make_backend: MakeBackend, mode: AuthMode
) -> None:
    assert memcached.command(b"set app-user 0 0 4\r\nmine\r\n") == b"STORED\r\n"
    backend = make_backend([memcached.address], username=USER, password=PASSWORD,
                           auth_mode=mode, pool_size=2)
    pool = backend.servers[memcached.address].pool
    cache_client = CacheClient(backend, keys=KEYS)
    assert await cache_client.set("k", "v", 60)
    async with pool_both_busy(pool):  # two handshakes
        pass
    assert await value_of(cache_client, "k") == "v"
    assert pool.connect_attempts == 2  # memcached's form was accepted both times
    # read back on separate raw connections: the username's key untouched, nothing else
    assert memcached.command(b"get app-user\r\n") == b"VALUE app-user 0 4\r\nmine\r\nEND\r\n"
    assert memcached.command(b"get _ascii_auth\r\n") == b"END\r\n"
    assert PASSWORD.encode() not in memcached.command(b"get app-user _ascii_auth auth\r\n")


async def test_memcachier_mode_on_an_open_server_deletes_the_password_and_stops(
    memcached: MemcachedProcess, make_backend: MakeBackend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    backend = make_backend([memcached.address], username=USER, password=PASSWORD,
                           auth_mode="memcachier", retry_timeout=0.05, failure_limit=10)
    pool = backend.servers[memcached.address].pool
    cache_client = CacheClient(backend, keys=KEYS)
    assert await cache_client.set("k", 1, 60) is False
    assert memcached.command(b"get app-user\r\n") == b"END\r\n"  # deleted
    assert pool.connect_attempts == 2  # the handshake, then an unauthenticated get
    await asyncio.sleep(0.1)
    assert await cache_client.set("k", 1, 60) is False
    assert pool.connect_attempts == 2  # the credentials are never sent there again
    assert "does not authenticate" in caplog.text
    assert PASSWORD not in caplog.text and USER not in caplog.text


async def test_a_server_that_keeps_the_handshake_behind_auth_is_left_alone(
    memcached: MemcachedProcess, make_backend: MakeBackend
) -> None:
    """MemCachier might store the handshake as an item; it still refuses unauthenticated
    reads, so it is an authenticating server and must keep working."""
    shim = await MemcachierShim(memcached.address, USER, PASSWORD, store_handshake=True).start()
    try:
        backend = make_backend([shim.address], username=USER, password=PASSWORD,
                               auth_mode="memcachier")
        cache_client = CacheClient(backend, keys=KEYS)
        assert await cache_client.set("k", "v", 60)
        assert await value_of(cache_client, "k") == "v"
        assert shim.accepted == 1 and shim.rejected == 1  # the unauthenticated get, refused
        # behind the shim (MemCachier's storage, here) our client deleted nothing
        assert PASSWORD.encode() in memcached.command(b"get app-user\r\n")
    finally:
        await shim.stop()


class pool_both_busy:
    """Hold every connection of a two-connection pool at once (forcing a new one)."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool
        self.conns: list[Connection] = []

    async def __aenter__(self) -> None:
        self.conns = [await self.pool.acquire(1.0), await self.pool.acquire(1.0)]

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for conn in self.conns:
            self.pool.release(conn, reusable=True)


@pytest.mark.parametrize("mode", ["auto", "memcached", "memcachier"])
async def test_bad_password_fails_open_and_marks_the_server(
    authed_memcached: MemcachedProcess,
    shim: MemcachierShim,
    make_backend: MakeBackend,
    caplog: pytest.LogCaptureFixture,
    mode: AuthMode,
) -> None:
    caplog.set_level(logging.DEBUG)
    target = shim.address if mode == "memcachier" else authed_memcached.address
    backend = make_backend([target], username=USER, password="wrong-password", auth_mode=mode)
    cache_client = CacheClient(backend, keys=KEYS)
    assert await cache_client.set("k", 1, 60) is False
    assert await cache_client.get("k") is None
    assert backend.servers[target].state == "retrying"
    assert counted(cache_client, "errors") == 1 and counted(cache_client, "unavailable") == 1
    assert "wrong-password" not in caplog.text and USER not in caplog.text
    assert "wrong-password" not in repr(backend.servers[target].pool.__dict__)


@pytest.mark.parametrize("case", ["auto", "memcached", "memcachier", "memcachier-open"])
async def test_a_failed_handshake_never_shows_the_credentials(
    authed_memcached: MemcachedProcess,
    shim: MemcachierShim,
    memcached: MemcachedProcess,
    make_backend: MakeBackend,
    caplog: pytest.LogCaptureFixture,
    case: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    targets: dict[str, tuple[MemcachedProcess | MemcachierShim, str]] = {
        "auto": (authed_memcached, "wrong-password"),
        "memcached": (authed_memcached, "wrong-password"),
        "memcachier": (shim, "wrong-password"),
        "memcachier-open": (memcached, PASSWORD),
    }
    target, password = targets[case]
    backend = make_backend([target.address], username=USER, password=password,
                           auth_mode=case.removesuffix("-open"))
    with pytest.raises(AuthenticationFailed) as info:
        await backend.servers[target.address].pool.acquire(1.0)
    cache_client = CacheClient(backend, keys=KEYS)
    assert await cache_client.set("k", 1, 60) is False  # through the client and its logging too
    shown = [str(info.value), repr(info.value), "".join(traceback.format_exception(info.value)),
             caplog.text]
    for text in shown:
        assert USER not in text and password not in text


async def test_shim_refuses_memcached_form(shim: MemcachierShim, make_backend: MakeBackend) -> None:
    backend = make_backend([shim.address], username=USER, password=PASSWORD,
                           auth_mode="memcached")
    cache_client = CacheClient(backend, keys=KEYS)
    assert await cache_client.set("k", 1, 60) is False
    assert shim.rejected == 1 and shim.accepted == 0

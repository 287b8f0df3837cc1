"""A bounded connection pool for one memcached server.

At most `size` connections exist, opened lazily within `connect_timeout` (authentication
included, `auth.py`). Callers wait first come, first served, for at most their deadline.
Once a wait has timed out with no connection coming back while it waited (stuck holders),
the pool is saturated: new callers fail at once (a miss) until a connection comes back;
only an urgent caller (an invalidation) still waits. A timeout in a busy pool whose
connections do come back saturates nothing. A connection returns to the pool only if its
holder says it is clean; otherwise it is closed
(docs/CACHE.md, "Servers, deadlines and failover").
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque

from .auth import (
    AuthenticationFailed,
    AuthForm,
    AuthMode,
    Credentials,
    answers_unauthenticated,
    authenticate,
    echoes_password,
    forget_password,
)
from .deadlines import Deadlines
from .protocol import Connection

logger = logging.getLogger("app.cache")


class PoolTimeout(TimeoutError):
    """No connection became free before the deadline (the pool is saturated)."""


class ConnectionPool:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        size: int,
        connect_timeout: float,
        credentials: Credentials | None = None,
        auth_mode: AuthMode = "auto",
    ) -> None:
        if size < 1:
            raise ValueError("pool size must be >= 1")
        self.host, self.port = host, port
        self.address = f"{host}:{port}"
        self.size = size
        self.connect_timeout = connect_timeout
        self.connect_attempts = 0
        self._credentials = credentials
        self._forms: tuple[AuthForm, ...] = credentials.forms(auth_mode) if credentials else ()
        self._settled = False  # a handshake succeeded: self._forms is the one that works
        self._settling = asyncio.Lock()
        self._idle: deque[Connection] = deque()
        self._free = size  # slots (the right to hold a connection) nobody holds
        self._saturated = False  # a wait timed out, and no slot has come back since
        self._released_at = -math.inf  # time.monotonic() when a slot last came back
        self._waiting_since: dict[asyncio.Future[None], float] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()  # first come, first served
        self._waiting: Deadlines[asyncio.Future[None]] = Deadlines(self._time_out)

    # `timeout` is a deadline the pool's one expiry timer enforces: wrapping each wait in
    # `asyncio.timeout` instead is what this pool avoids (see the module docstring).
    async def acquire(self, timeout: float, *, urgent: bool = False) -> Connection:  # noqa: ASYNC109
        """A connection to this server; raises `PoolTimeout`, `OSError`, `TimeoutError`
        (connect) or `AuthenticationFailed`. An `urgent` caller (an invalidation) waits
        even while the pool is saturated: losing it would let stale entries be read."""
        if self._free and not self._waiters:
            self._free -= 1
        elif self._saturated and not urgent:
            raise PoolTimeout(f"no free connection to {self.address} (all held)")
        else:
            await self._wait_for_slot(timeout)
        try:
            while self._idle:
                conn = self._idle.pop()
                if _usable(conn):
                    return conn
                _close(conn)
            return await self._connect()
        except BaseException:
            self._release_slot()
            raise

    @property
    def saturated(self) -> bool:
        """A wait for a connection timed out, and none has come back since."""
        return self._saturated

    def release(self, conn: Connection, *, reusable: bool) -> None:
        """Take back a connection; reuse it only if its holder says it is clean (a dead one
        is noticed when it is next taken)."""
        if reusable:
            self._idle.append(conn)
        else:
            _close(conn)
        self._release_slot()

    async def _wait_for_slot(self, timeout: float) -> None:  # noqa: ASYNC109 (as acquire)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._waiting.add(waiter, timeout)
        self._waiting_since[waiter] = time.monotonic()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed a slot, then cancelled
                self._release_slot()
            raise
        finally:
            self._waiting.discard(waiter)
            self._waiting_since.pop(waiter, None)

    def _release_slot(self) -> None:
        self._saturated = False
        self._released_at = time.monotonic()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # skip the cancelled and the timed out
                waiter.set_result(None)
                return
        self._free += 1

    def _time_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            since = self._waiting_since.get(waiter, math.inf)
            self._saturated = self._released_at < since  # nothing came back while it waited
            waiter.set_exception(PoolTimeout(f"no free connection to {self.address}"))

    def clear(self) -> None:
        """Close the idle connections (after a server failure they are suspect)."""
        while self._idle:
            _close(self._idle.pop())

    async def _connect(self) -> Connection:
        async with asyncio.timeout(self.connect_timeout):
            if self._credentials is None:
                return await self._open()
            if self._settled:
                return await self._login(self._credentials)
            # Until one handshake succeeded, one at a time: a crowd of first callers makes
            # one wrong-form attempt (auto) and exposes an open server once at most.
            async with self._settling:
                return await self._login(self._credentials)

    async def _open(self) -> Connection:
        self.connect_attempts += 1
        reader, writer = await asyncio.open_connection(self.host, self.port)
        return Connection(reader, writer)

    async def _login(self, credentials: Credentials) -> Connection:
        """A connection authenticated in the first form the server accepts (remembered)."""
        forms = self._forms
        for form in forms:
            last = form == forms[-1]
            conn = await self._open()
            try:
                try:
                    # an earlier form gets a share of the deadline, so a refusal by
                    # silence still leaves time for the next one
                    async with asyncio.timeout(None if last else self.connect_timeout / 2):
                        accepted = await authenticate(conn, credentials, form)
                except TimeoutError:
                    if last:
                        raise
                    accepted = False
                if accepted and form == "memcachier":
                    await self._refuse_if_open(conn, credentials)
            except BaseException:
                _close(conn)
                raise
            if accepted:
                self._forms, self._settled = (form,), True
                return conn
            _close(conn)
        if not self._forms:
            raise AuthenticationFailed(f"cache server {self.address} does not authenticate")
        raise AuthenticationFailed(f"cache server {self.address} rejected the credentials")

    async def _refuse_if_open(self, conn: Connection, credentials: Credentials) -> None:
        """MemCachier's form left the password readable on a server without authentication:
        delete it, never send this form there again, and fail.

        A server that keeps the handshake as an item but refuses unauthenticated reads is
        authenticating: it is left alone (MemCachier's behaviour here is undocumented).
        """
        if not await echoes_password(conn, credentials):
            return
        probe = await self._open()
        try:
            is_open = await answers_unauthenticated(probe, credentials)
        except OSError:
            is_open = False
        finally:
            _close(probe)
        if not is_open:
            return
        await forget_password(conn, credentials)
        self._forms = tuple(form for form in self._forms if form != "memcachier")
        logger.warning(
            "cache server %s does not authenticate: it stored MemCachier's handshake as a "
            "readable item (deleted now); that form is not sent to it again", self.address,
        )
        raise AuthenticationFailed(f"cache server {self.address} does not authenticate")


def _usable(conn: Connection) -> bool:
    return not (conn.reader.at_eof() or conn.reader.exception() or conn.writer.is_closing())


def _close(conn: Connection) -> None:
    conn.writer.close()

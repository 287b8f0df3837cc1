"""A bounded connection pool for one memcached server.

At most `size` connections exist; callers wait for one first come, first served (asyncio's
semaphore is FIFO) and for at most the given deadline. Connections open lazily, within
`connect_timeout` including the authentication handshake. A connection comes back to the
pool only if its holder says it is clean: after a timeout, cancellation, EOF or unexpected
reply it is closed.
"""

from __future__ import annotations

import asyncio
from collections import deque

from .auth import AuthenticationFailed, AuthForm, AuthMode, Credentials, authenticate
from .protocol import Connection


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
        self._idle: deque[Connection] = deque()
        self._slots = asyncio.Semaphore(size)

    async def acquire(self, timeout: float) -> Connection:
        """A connection to this server; raises `PoolTimeout`, `OSError`, `TimeoutError`
        (connect) or `AuthenticationFailed`."""
        if self._slots.locked():
            try:
                async with asyncio.timeout(timeout):
                    await self._slots.acquire()
            except TimeoutError:
                raise PoolTimeout(f"no free connection to {self.address}") from None
        else:
            await self._slots.acquire()
        try:
            while self._idle:
                conn = self._idle.pop()
                if _usable(conn):
                    return conn
                _close(conn)
            return await self._connect()
        except BaseException:
            self._slots.release()
            raise

    def release(self, conn: Connection, *, reusable: bool) -> None:
        if reusable and _usable(conn):
            self._idle.append(conn)
        else:
            _close(conn)
        self._slots.release()

    def clear(self) -> None:
        """Close the idle connections (after a server failure they are suspect)."""
        while self._idle:
            _close(self._idle.pop())

    async def _connect(self) -> Connection:
        async with asyncio.timeout(self.connect_timeout):
            for form in self._forms or (None,):
                self.connect_attempts += 1
                reader, writer = await asyncio.open_connection(self.host, self.port)
                conn = Connection(reader, writer)
                if form is None or self._credentials is None:
                    return conn
                try:
                    accepted = await authenticate(conn, self._credentials, form)
                except BaseException:
                    _close(conn)
                    raise
                if accepted:
                    self._forms = (form,)
                    return conn
                _close(conn)
        raise AuthenticationFailed(f"cache server {self.address} rejected the credentials")


def _usable(conn: Connection) -> bool:
    return not (conn.reader.at_eof() or conn.reader.exception() or conn.writer.is_closing())


def _close(conn: Connection) -> None:
    conn.writer.close()

"""One memcached server's failover state: pylibmc's ``retry_timeout``, ``dead_timeout`` and
``server_failure_limit``, without its key remapping.

- ``up``: operations run. A failure (connect error or timeout, operation timeout, EOF,
  unexpected reply, rejected credentials) makes it ``retrying``: every operation is skipped
  (a miss, writes dropped, no connection attempt) for `retry_timeout`, then one caller probes
  it. `failure_limit` consecutive failures make it ``dead``: probed every `dead_timeout`.
- A server that was dead, or that dropped or failed a write while not ``up``, is flushed by
  the probe before it serves again.
- An operation past `op_timeout` has its connection aborted and raises `TimeoutError`. The
  caller's own cancellation propagates untouched and only closes the connection: it is no
  failure (docs/CACHE.md, "Servers, deadlines and failover").
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

from aiomcache.exceptions import ValidationException

from ..keys import InvalidKey
from .base import NotANumber, ServerState, ServerUnavailable, ValueTooLarge
from .deadlines import Deadlines
from .pool import ConnectionPool, PoolTimeout
from .protocol import Codec, Connection

logger = logging.getLogger("app.cache")
T = TypeVar("T")
# Errors that say nothing about the server's health.
_NOT_THE_SERVERS_FAULT = (
    PoolTimeout, ValidationException, InvalidKey, ValueTooLarge, NotANumber
)


class Server:
    def __init__(
        self,
        pool: ConnectionPool,
        codec: Codec,
        *,
        op_timeout: float,
        retry_timeout: float,
        dead_timeout: float,
        failure_limit: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.address = pool.address
        self.op_timeout = op_timeout
        self.retry_timeout = retry_timeout
        self.dead_timeout = dead_timeout
        self.failure_limit = max(1, failure_limit)
        self.state: ServerState = "up"
        self.failures = 0
        self.flushes = 0
        self._codec = codec
        self._clock = clock
        self._retry_at = 0.0
        self._probe_ended: asyncio.Event | None = None  # while a probe runs
        self._stale = False
        self._deadlines: Deadlines[Connection] = Deadlines(_abort)

    async def call(
        self, op: Callable[[Connection], Awaitable[T]], *, write: bool, urgent: bool = False
    ) -> T:
        """Run `op` on a connection within the deadlines.

        An `urgent` write (an invalidation) is not skipped: while this process counts the
        server as failed it probes the server at once instead (or waits for the probe in
        flight: one connection attempt at a time). Another process may already be reading
        from the server again, and must not read what this write replaces.

        Raises `ServerUnavailable` (skipped), `PoolTimeout`, or the operation's error.
        """
        if self.state != "up":
            return await self._probe(op, write, urgent)
        return await self._run(op, write, probing=False, urgent=urgent)

    async def _probe(
        self, op: Callable[[Connection], Awaitable[T]], write: bool, urgent: bool
    ) -> T:
        if self._probe_ended is not None:
            if urgent:
                # The probe flushes the server if need be; this write then lands after it.
                await self._probe_ended.wait()
                if self.state == "up":
                    return await self._run(op, write, probing=False, urgent=urgent)
            self._skip(write)
        if self._clock() < self._retry_at and not urgent:
            self._skip(write)
        ended = self._probe_ended = asyncio.Event()
        try:
            if self.state == "dead" or self._stale:
                await self._run(self._codec.flush, True, probing=True)
                self.flushes += 1
                self._recover("flushed")
                return await self._run(op, write, probing=False, urgent=urgent)
            result = await self._run(op, write, probing=True, urgent=urgent)
            self._recover("reachable")
            return result
        finally:
            self._probe_ended = None
            ended.set()

    def _skip(self, write: bool) -> NoReturn:
        if write:  # the server may now hold what this write would have replaced
            self._stale = True
        raise ServerUnavailable(self.address)

    async def _run(
        self, op: Callable[[Connection], Awaitable[T]], write: bool, *, probing: bool,
        urgent: bool = False,
    ) -> T:
        try:
            conn = await self.pool.acquire(self.op_timeout, urgent=urgent)
            deadline = self._deadlines.add(conn, self.op_timeout)
            clean = False
            try:
                result = await op(conn)
                clean = True
            except Exception as exc:
                if asyncio.get_running_loop().time() >= deadline:  # aborted, or failed too late
                    raise TimeoutError(f"cache operation on {self.address} timed out") from exc
                raise
            finally:
                self._deadlines.discard(conn)
                self.pool.release(conn, reusable=clean)
        except _NOT_THE_SERVERS_FAULT:
            raise
        except Exception:
            self._fail(write, probing)
            raise
        if self.failures and self.state == "up":
            self.failures = 0
        return result

    def _fail(self, write: bool, probing: bool) -> None:
        if write:
            self._stale = True
        if self.state != "up" and not probing:
            return  # an operation already in flight when the server failed: counted once
        self.failures += 1
        self.pool.clear()
        if self.failures >= self.failure_limit:
            self.state, wait = "dead", self.dead_timeout
        else:
            self.state, wait = "retrying", self.retry_timeout
        self._retry_at = self._clock() + wait
        logger.warning(
            "cache server %s is %s after %d failure(s); next probe in %.1fs",
            self.address, self.state, self.failures, wait,
        )

    def _recover(self, how: str) -> None:
        logger.info("cache server %s is up again (%s)", self.address, how)
        self.state, self.failures, self._stale = "up", 0, False


def _abort(conn: Connection) -> None:
    """End whatever awaits `conn` now; an aborted connection is never pooled again."""
    conn.writer.transport.abort()

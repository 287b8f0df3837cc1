"""The courier: delivers the invalidation log's rows to the cache, in every app process.

A writer bumps its rows' tokens right after commit (`deliver`) and forgets the rows; if
that bump fails it releases them, due at once, for whichever process claims them first
(`deliver_due`). Only releases notify (LISTEN/NOTIFY on PostgreSQL), never writes. Every
process also polls the log every `POLL` seconds, for the rows of a writer that died or hung
(due a `LEASE` after the write) and for missed notifications. A delivered row is deleted;
one the claimer could not deliver is released again, and that claimer leaves the log to
the others for `BACKOFF`. Delivery bound, from the commit: at most `LEASE` + `POLL` plus the
time to claim and bump (docs/CACHE.md, "Invalidation log (PostgreSQL and MySQL)").
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.db import transaction
from app.invalidation import log
from app.invalidation.log import Claimed, Invalidation
from app.throttled_log import ThrottledLog

LEASE = 0.25  # a row's grace for its writer, and a claim's length
POLL = 0.5  # the longest a process goes without looking at the log
BACKOFF = 1.0  # how long a process that failed a delivery leaves the log to the others
CLAIM_LIMIT = 256
SETTLE_BATCH = 0.01  # writes settled within this window share one transaction
LISTEN_RETRY = 1.0

Bump = Callable[..., Awaitable[bool]]
logger = logging.getLogger("tasklist.invalidation")


class Courier:
    """One per process. `bump(*topics)` replaces the topics' tokens and says
    whether every one was written."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bump: Bump,
        *,
        lease: float = LEASE,
        poll: float = POLL,
        backoff: float = BACKOFF,
        listen_retry: float = LISTEN_RETRY,
    ) -> None:
        self.sessions = sessions
        self.bump = bump
        self.poll = poll
        self.backoff = backoff
        self.listen_retry = listen_retry
        self._lease_ms = math.ceil(lease * 1000)
        self._forgettable: list[str] = []  # writes delivered by this process
        self._releasable: list[str] = []  # writes it could not deliver
        self._settle_now = asyncio.Event()
        self._wake = asyncio.Event()
        self._next_look = 0.0  # loop time of the next look at the log
        self._quiet_until = 0.0
        self._warnings = ThrottledLog(logger)

    @property
    def engine(self) -> AsyncEngine:
        return cast(AsyncEngine, self.sessions.kw["bind"])  # the engine its sessions are bound to

    async def backlog(self) -> int:
        """The rows in the log now, every process's."""
        async with transaction(self.sessions) as session:
            return await log.backlog(session)

    async def record(self, session: AsyncSession, invalidation: Invalidation) -> None:
        """Store `invalidation` in the write's transaction (`session`)."""
        await log.record(session, invalidation, lease_ms=self._lease_ms)

    async def deliver(self, invalidation: Invalidation, *, committed: bool = True) -> None:
        """Bump the topics of a write that committed (the fast path); then, in the
        background, forget its rows if that worked, else release them to the other
        processes at once (so that a write's answer never waits for either).
        `committed=False`: the commit's outcome is unknown, so its rows (if any) stay, to
        fall due a lease from the write."""
        delivered = await self.bump(*invalidation.topics)
        if committed:
            (self._forgettable if delivered else self._releasable).append(invalidation.id)
            self._settle_now.set()

    async def deliver_due(self) -> int:
        """Claim the due rows, bump their topics (once each), delete what was delivered
        and release the rest; how many rows were delivered.

        Of a topic it could not bump, only the newest row is kept: any bump after the
        commits of all of them delivers them all. So the log holds at most a row per
        topic however long a memcached server stays out of reach."""
        async with transaction(self.sessions) as session:
            claimed = await log.claim_due(session, lease_ms=self._lease_ms, limit=CLAIM_LIMIT)
        if not claimed:
            return 0
        rows: dict[str, list[Claimed]] = {}
        for row in claimed:
            rows.setdefault(row.topic, []).append(row)
        written = await asyncio.gather(*(self.bump(topic) for topic in rows))
        delivered: list[int] = []
        covered: list[int] = []  # by the newest row of their topic, which stays
        released: list[int] = []
        for of_topic, ok in zip(rows.values(), written, strict=True):
            ids = sorted(row.id for row in of_topic)
            if ok:
                delivered += ids
            else:
                covered += ids[:-1]
                released.append(ids[-1])
        async with transaction(self.sessions) as session:
            await log.settle(session, delivered=delivered + covered, released=released)
        if released:
            self._quiet_until = asyncio.get_running_loop().time() + self.backoff
            self._warnings.warning(
                "deliver",
                "could not deliver %d invalidation(s) (the cache did not answer); released "
                "them to the other processes", len(released),
            )
        return len(delivered)

    async def run(self) -> None:
        """Deliver, forget and (on PostgreSQL) listen until cancelled."""
        workers = [self._look_at_log(), self._settle_writes()]
        if self.engine.dialect.name == "postgresql":
            workers.append(self._listen())
        await asyncio.gather(*workers)

    def _look_now(self) -> None:
        """Look at the log at once (unless this process is leaving it to the others)."""
        at = max(asyncio.get_running_loop().time(), self._quiet_until)
        if at < self._next_look:
            self._next_look = at
            self._wake.set()

    async def _look_at_log(self) -> None:
        loop = asyncio.get_running_loop()
        self._next_look = loop.time() + self.poll
        while True:
            self._wake.clear()
            wait = self._next_look - loop.time()
            if wait > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), wait)
                except TimeoutError:
                    pass
                if loop.time() < self._next_look:
                    continue  # woken to look sooner: wait again, for the sooner time
            self._next_look = loop.time() + self.poll
            try:
                await self.deliver_due()
            except Exception as error:  # noqa: BLE001 (a background loop must outlive it)
                self._warnings.warning("look", "could not read the invalidation log: %s", error)
            self._next_look = max(self._next_look, self._quiet_until)

    async def _settle_writes(self) -> None:
        """Forget the rows of this process's delivered writes and release those of the
        others, batched: the writes of one `SETTLE_BATCH` share a transaction."""
        while True:
            await self._settle_now.wait()
            await asyncio.sleep(SETTLE_BATCH)
            self._settle_now.clear()
            delivered, self._forgettable = self._forgettable, []
            undelivered, self._releasable = self._releasable, []
            try:
                async with transaction(self.sessions) as session:
                    if delivered:
                        await log.forget(session, delivered)
                    if undelivered:
                        await log.release(session, log.of_writes(undelivered))
            # the rows stay: delivered again (harmless), or due a lease from their write
            except Exception as error:  # noqa: BLE001 (a background loop must outlive it)
                self._warnings.warning(
                    "settle", "could not settle this process's invalidations: %s", error
                )

    async def _listen(self) -> None:
        """LISTEN on a connection of its own, reconnecting when it is lost."""
        _, params = self.engine.dialect.create_connect_args(self.engine.url)
        while True:
            try:
                await self._listen_once(params)
                self._warnings.warning("listen", "lost the connection listening for invalidations")
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                self._warnings.warning("listen", "cannot listen for invalidations: %s", error)
            await asyncio.sleep(self.listen_retry)

    async def _listen_once(self, params: Mapping[str, Any]) -> None:
        """Listen until the connection closes. Notifications sent while no connection
        listened are lost, so each new one starts with a look at the log."""
        connection = await asyncpg.connect(**params, timeout=5)
        try:
            closed = asyncio.Event()
            connection.add_termination_listener(lambda _: closed.set())
            await connection.add_listener(log.CHANNEL, self._notified)
            self._look_now()
            await closed.wait()
        finally:
            connection.terminate()

    def _notified(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        self._look_now()

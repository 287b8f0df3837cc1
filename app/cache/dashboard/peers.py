"""The app's processes seen from any one of them: each process publishes its own data (the
dashboard's counters) to the cache every `interval` seconds under a `ttl`, and a reader
gets the live ones.

The directory is a fixed row of `SLOTS` keys (``<prefix>:1:peers:slot:<n>``). A process
claims a free slot with ``add`` (atomic: never shared), rewrites it only after reading that it
still holds its own entry, deletes it on a clean shutdown, and claims another on its next
publish when its slot is gone or not its own. A dead process's entry expires `ttl` seconds
later by memcached's clock. Readers keep one entry per process id (its highest `seq`). With
the in-process cache, or the cache off or down, a reader sees only itself
(docs/CACHE.md, "One dashboard for every process").
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from ..backends.base import PartialResult
from ..client import CacheClient
from ..entry import decode_many
from ..keys import KeyKinds

SLOTS = 64  # processes beyond this many publish nothing (each still sees itself)
TTL_INTERVALS = 5  # an entry outlives this many publishes that did not happen
MIN_TTL = 2  # memcached expires by whole seconds: a 1 s TTL can end right after the set


@dataclass(frozen=True)
class Peer:
    """One process as it published itself; `seq` grows with each of its publishes."""

    id: str
    host: str
    pid: int
    started_at: float
    seq: int
    data: dict[str, Any]


@dataclass(frozen=True)
class Census:
    """The live processes, oldest first; `complete` is False when part of the directory
    could not be read (a cache server is down), so processes may be missing."""

    peers: list[Peer]
    complete: bool


class Peers:
    """This process's entry in the directory, and the directory read back.

    `data` returns what to publish (JSON-able), called at every publish.
    """

    def __init__(
        self,
        client: CacheClient,
        data: Callable[[], dict[str, Any]],
        *,
        interval: float,
        slots: int = SLOTS,
    ) -> None:
        if not 0 < interval < math.inf:
            raise ValueError(f"the publish interval must be positive and finite: {interval!r}")
        self.client = client
        self.interval = interval
        self.ttl = max(MIN_TTL, math.ceil(interval * TTL_INTERVALS))
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.id = f"{self.host}-{self.pid}-{secrets.token_hex(4)}"  # a restart is a new id
        self.started_at = time.time()
        self._data = data
        self._keys = [client.keys.key(KeyKinds.PEERS, "slot", n) for n in range(slots)]
        self._slot: int | None = None
        self._seq = 0
        self._lock = asyncio.Lock()

    def current(self) -> Peer:
        """This process now, as it would publish itself."""
        self._seq += 1
        return Peer(self.id, self.host, self.pid, self.started_at, self._seq, self._data())

    async def publish(self) -> bool:
        """Write this process's entry, first claiming a slot if it holds none; False if
        nothing could be written (the cache is down, or every slot is taken)."""
        async with self._lock:
            value = asdict(self.current())
            if self._slot is not None and await self._rewrite(self._keys[self._slot], value):
                return True
            self._slot = await self._claim(value)
            return self._slot is not None

    async def _rewrite(self, key: str, value: dict[str, Any]) -> bool:
        held = await self.client.get(key)
        if held is None:  # expired, or its server lost it: still free unless taken meanwhile
            return await self.client.add(key, value, self.ttl)
        return _owner(held.value) == self.id and await self.client.set(key, value, self.ttl)

    async def _claim(self, value: dict[str, Any]) -> int | None:
        taken = await self.client.get_many(self._keys)
        for n, key in enumerate(self._keys):  # a slot on a down server fails without I/O
            if key not in taken and await self.client.add(key, value, self.ttl):
                return n
        return None

    async def run(self) -> None:
        """Publish every `interval` seconds until cancelled."""
        while True:
            await self.publish()
            await asyncio.sleep(self.interval)

    async def withdraw(self) -> None:
        """Delete this process's entry (a clean shutdown), so readers drop it at once."""
        async with self._lock:
            if self._slot is None:
                return
            key, self._slot = self._keys[self._slot], None
            held = await self.client.get(key)
            if held is not None and _owner(held.value) == self.id:
                await self.client.delete(key)

    async def census(self) -> Census:
        """The live processes, this one included.

        This process publishes first (unless a publish is under way), so its own figures
        are current and everything comes from one place: two processes answer alike, and
        a later read never shows less while the same processes report.
        """
        if not self._lock.locked():
            await self.publish()
        complete = True
        # The backend, not the client: the client would turn an unread server into misses.
        try:
            found = await self.client.backend.get_many(self._keys)
        except PartialResult as partial:
            found, complete = partial.found, False
        except Exception:
            found, complete = {}, False
        entries, _ = decode_many(found)
        latest: dict[str, Peer] = {}
        for entry in entries.values():
            peer = _peer(entry.value)
            if peer is not None and (peer.id not in latest or peer.seq > latest[peer.id].seq):
                latest[peer.id] = peer
        if self.id not in latest:  # not published: the cache is off or down, or slots full
            latest[self.id] = self.current()
        return Census(sorted(latest.values(), key=lambda p: (p.started_at, p.id)), complete)


def _owner(value: Any) -> Any:
    return value.get("id") if isinstance(value, dict) else None


def _peer(value: Any) -> Peer | None:
    """A directory entry, or None for anything else (another release's shape, say)."""
    if not isinstance(value, dict):
        return None
    try:
        peer = Peer(**value)
    except TypeError:
        return None
    fields = (peer.id, peer.host, peer.pid, peer.started_at, peer.seq, peer.data)
    types = (str, str, int, int | float, int, dict)
    return peer if all(isinstance(v, t) for v, t in zip(fields, types, strict=True)) else None

"""`CacheClient`: the fail-open cache facade the rest of the app uses.

No method raises because of the cache: a backend error, timeout or unavailable server
becomes a miss (reads) or ``False`` (writes), and is counted. Only the caller's
own cancellation propagates. Programming errors do raise: a key that is not a string, a
non-positive TTL, or a value JSON cannot hold (`TypeError`/`ValueError`). A string key that
memcached cannot carry (`KeyBuilder` never makes one) is a counted error and a miss.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, TypedDict

from app.throttled_log import ThrottledLog

from .backends.base import (
    MAX_TTL,
    CacheBackend,
    PartialResult,
    ServerState,
    ServerStatus,
    ServerUnavailable,
    ValueTooLarge,
)
from .entry import DEFAULT_COMPRESS_THRESHOLD, Entry, decode, decode_many, encode
from .keys import KeyBuilder, kind_of
from .stats import ERRORS, HITS, INDEX, MISSES, CacheCounters, Snapshot

logger = logging.getLogger("app.cache")
# Keys whose (kind, server) and counters row are memoized. Many keys are used once
# (see MEMO_SIZE in backends/memcached.py): a larger memo holds more dead keys, not more hits.
_ROWS_MAX = 8_192
# One warning per kind of failure and kind in this many seconds: a frozen server under
# load fails every request, and the dashboard counts them all anyway.
WARN_EVERY = 10.0


class CacheClient:
    def __init__(
        self,
        backend: CacheBackend,
        *,
        keys: KeyBuilder,
        max_item_size: int = 1_048_576,
        compress_threshold: int = DEFAULT_COMPRESS_THRESHOLD,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.keys = keys
        self.counters = CacheCounters()
        self.max_item_size = max_item_size
        self.compress_threshold = compress_threshold
        self._clock = clock
        self._warnings = ThrottledLog(logger, WARN_EVERY, clock)  # per (metric, kind)
        self._where = _memoized_where(backend.server_for)
        self._rows: dict[str, list[int]] = {}  # key -> its live counters row (see `_counts`)

    def _counts(self, key: str) -> list[int]:
        """A key's live counters row (the same list for the client's lifetime), memoized."""
        counts = self._rows.get(key)
        if counts is None:
            if len(self._rows) >= _ROWS_MAX:  # bounded like an LRU, without the LRU's cost per hit
                self._rows.clear()
            counts = self._rows[key] = self.counters.row(self._where(key))
        return counts

    async def get(self, key: str) -> Entry | None:
        """The entry under `key`, or ``None`` on a miss or any cache failure."""
        try:
            data = await self.backend.get(key)
        except Exception as exc:
            self._failed(key, exc, read=True)
            return None
        counts = self._counts(key)
        if data is None:
            counts[MISSES] += 1
            return None
        entry = decode(data)
        if entry is None:
            counts[ERRORS] += 1
            counts[MISSES] += 1
            return None
        counts[HITS] += 1
        return entry

    async def get_many(self, keys: Sequence[str]) -> dict[str, Entry]:
        """The entries found among `keys` (one backend call); failed servers' keys are misses."""
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}
        try:
            found = await self.backend.get_many(keys)
        except PartialResult as partial:
            found = partial.found
            keys = self._answered(keys, partial)
        except Exception as exc:
            for key in keys:
                self._failed(key, exc, read=True)
            return {}
        entries, bad = decode_many(found)
        self._count_reads(keys, found, entries, bad)
        return entries

    def _answered(self, keys: list[str], partial: PartialResult) -> list[str]:
        """The keys whose server answered; the others' failures are counted."""
        answered = []
        for key in keys:
            exc = partial.errors.get(self.backend.server_for(key))
            if exc is None:
                answered.append(key)
            else:
                self._failed(key, exc, read=True)
        return answered

    def _count_reads(
        self, keys: list[str], found: dict[str, bytes], entries: dict[str, Entry], bad: list[str]
    ) -> None:
        """Count a multi-get: the decoded entries as hits, the undecodable ones as errors and
        misses, the keys not found as misses."""
        counts_of = self._counts
        for key in entries:
            counts_of(key)[HITS] += 1
        for key in bad:
            counts = counts_of(key)
            counts[ERRORS] += 1
            counts[MISSES] += 1
        if len(found) < len(keys):
            for key in keys:
                if key not in found:
                    counts_of(key)[MISSES] += 1

    async def set(
        self,
        key: str,
        value: Any,
        ttl: float,
        *,
        soft_ttl: float | None = None,
        urgent: bool = False,
        payload: bytes | None = None,
    ) -> bool:
        """Store `value` for `ttl` seconds (rounded up to whole ones, at most 30 days);
        `soft_ttl` marks it stale earlier. False if not stored.

        `urgent` is for invalidations: the write is attempted even while its server is
        being skipped after failures (see `Server.call`). `payload`: raw bytes stored
        beside `value` as they are (`Entry.payload` when read).
        """
        return await self._store("set", key, value, ttl, soft_ttl, urgent, payload)

    async def add(
        self, key: str, value: Any, ttl: float, *, soft_ttl: float | None = None
    ) -> bool:
        """Store only if `key` is absent; False if present or on failure."""
        return await self._store("add", key, value, ttl, soft_ttl, False, None)

    async def _store(
        self,
        command: str,
        key: str,
        value: Any,
        ttl: float,
        soft_ttl: float | None,
        urgent: bool,
        payload: bytes | None,
    ) -> bool:
        seconds = _ttl(ttl)
        now = self._clock()
        soft = None if soft_ttl is None else now + soft_ttl
        entry = Entry(value, now, soft, payload)
        data = encode(entry, compress_threshold=self.compress_threshold)
        if len(data) + len(key) > self.max_item_size:
            self._count("too_large", key)
            if command == "set":  # like memcached refusing it: the value it replaces goes too
                await self.delete(key, urgent=urgent)
            return False
        try:
            if urgent:
                stored = await self.backend.set(key, data, seconds, urgent=True)
            else:
                stored = await getattr(self.backend, command)(key, data, seconds)
        except Exception as exc:
            self._failed(key, exc, read=False)
            return False
        if stored:
            self._count("sets", key)
        return stored

    async def count(self, key: str, ttl: float) -> int | None:
        """Add one to the counter at `key`, made at 0 to live `ttl` seconds if absent: the
        count now (`add` then `incr`, so concurrent callers never lose a count), or None
        when the cache could not count (a failure, the cache off, the key evicted between).

        A counter is a bare number, not an entry: `get` does not read it."""
        try:
            await self.backend.add(key, b"0", _ttl(ttl))
            return await self.backend.incr(key, 1)
        except Exception as exc:
            self._failed(key, exc, read=False)
            return None

    async def delete(self, key: str, *, urgent: bool = False) -> bool:
        """True if the key existed; False if absent or on failure; `urgent` as for `set`."""
        try:
            deleted = await self.backend.delete(key, urgent=urgent)
        except Exception as exc:
            self._failed(key, exc, read=False)
            return False
        self._count("deletes", key)
        return deleted

    def healthy(self) -> bool:
        """True when every configured server is up (always for the memory backend)."""
        return self.backend.healthy()

    async def stats(self) -> ClientStats:
        """Counters plus each server's state and memcached ``stats`` (JSON-able)."""
        try:
            servers = [_server_row(status) for status in await self.backend.server_stats()]
        except Exception as exc:
            self._failed("", exc, read=False)
            servers = []
        return {
            "backend": self.backend.name,
            "counters": self.counters.snapshot(),
            "servers": servers,
        }

    async def close(self) -> None:
        try:
            await self.backend.close()
        except Exception:
            logger.exception("closing the cache backend failed")

    def _count(self, metric: str, key: str, server: str | None = None) -> None:
        kind, owner = self._where(key)
        self.counters.row((kind, owner if server is None else server))[INDEX[metric]] += 1

    def _failed(self, key: str, exc: BaseException, *, read: bool) -> None:
        """Count a failed operation (re-raising the caller's own mistakes: see the module)."""
        if isinstance(exc, TypeError):
            raise exc
        metric = _metric_of(exc)
        server = getattr(exc, "server", None)
        self._count(metric, key, server)
        if read:
            self._count("misses", key, server)
        if metric in ("errors", "timeouts"):
            kind = kind_of(key)
            self._warnings.warning(
                (metric, kind),
                "cache %s on key kind %s: %s (more in the next %.0f s are counted on "
                "/stats, not logged)", metric, kind, type(exc).__name__, WARN_EVERY,
            )


def _metric_of(exc: BaseException) -> str:
    """The counter a failure goes to."""
    if isinstance(exc, ServerUnavailable):
        return "unavailable"
    if isinstance(exc, ValueTooLarge):
        return "too_large"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return "timeouts"
    return "errors"


class ServerRow(TypedDict):
    """`ServerStatus` as JSON."""

    address: str
    state: ServerState
    stats: dict[str, str | int | float]


class ClientStats(TypedDict):
    """`CacheClient.stats()`: the backend's name, the counters and each server's row."""

    backend: str
    counters: Snapshot
    servers: list[ServerRow]


def _server_row(status: ServerStatus) -> ServerRow:
    return {"address": status.address, "state": status.state, "stats": status.stats}


def _memoized_where(server_for: Callable[[str], str]) -> Callable[[str], tuple[str, str]]:
    """`where(key)`: the counters' ``(kind, server)`` of a key (a foreign key's
    kind: -), memoized."""

    @functools.lru_cache(maxsize=_ROWS_MAX)
    def where(key: str) -> tuple[str, str]:
        return (kind_of(key), server_for(key)) if key else ("-", "-")

    return where


def _ttl(ttl: float) -> int:
    """Whole seconds in 1..30 days: a longer memcached TTL would be read as a Unix time."""
    if not ttl > 0 or not math.isfinite(ttl):
        raise ValueError(f"cache TTLs must be finite and positive, not {ttl!r}")
    return min(math.ceil(ttl), MAX_TTL)

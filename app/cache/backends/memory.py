"""An in-process LRU cache with TTLs: the backend when no memcached server is configured.

Each process has its own copy, so several workers do not share invalidations beyond
their own TTLs.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

from ..keys import validate_key
from .base import NotANumber, ServerStatus

ADDRESS = "memory"


class MemoryBackend:
    """LRU + TTL in a dict. Every method runs without awaiting, so it is atomic under asyncio."""

    name = "memory"

    def __init__(self, max_items: int = 10_000, *, clock: Callable[[], float] = time.monotonic):
        if max_items < 1:
            raise ValueError("max_items must be >= 1")
        self.max_items = max_items
        self._clock = clock
        self._items: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._started = clock()
        self._hits = self._misses = self._evictions = 0

    def _live(self, key: str) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[1] <= self._clock():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return item[0]

    def _store(self, key: str, value: bytes, ttl: int) -> None:
        self._items[key] = (value, self._clock() + ttl)
        self._items.move_to_end(key)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)
            self._evictions += 1

    async def get(self, key: str) -> bytes | None:
        validate_key(key)
        value = self._live(key)
        if value is None:
            self._misses += 1
        else:
            self._hits += 1
        return value

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        found = {}
        for key in keys:
            value = await self.get(key)
            if value is not None:
                found[key] = value
        return found

    async def set(self, key: str, value: bytes, ttl: int, *, urgent: bool = False) -> bool:
        validate_key(key)
        self._store(key, value, ttl)
        return True

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        validate_key(key)
        if self._live(key) is not None:
            return False
        self._store(key, value, ttl)
        return True

    async def incr(self, key: str, delta: int) -> int | None:
        validate_key(key)
        value = self._live(key)
        if value is None:
            return None
        if not value.isdigit():
            raise NotANumber(f"incr of a value that is not a number: {key!r}")
        number = int(value) + delta
        self._items[key] = (b"%d" % number, self._items[key][1])  # its expiry stays
        return number

    async def delete(self, key: str, *, urgent: bool = False) -> bool:
        validate_key(key)
        present = self._live(key) is not None
        self._items.pop(key, None)
        return present

    async def server_stats(self) -> list[ServerStatus]:
        stats: dict[str, str | int | float] = {
            "curr_items": len(self._items),
            "bytes": sum(len(k) + len(v) for k, (v, _) in self._items.items()),
            "evictions": self._evictions,
            "get_hits": self._hits,
            "get_misses": self._misses,
            "limit_maxbytes": 0,
            "limit_items": self.max_items,
            "uptime": int(self._clock() - self._started),
        }
        return [ServerStatus(ADDRESS, "up", stats)]

    def server_for(self, key: str) -> str:
        return ADDRESS

    def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        self._items.clear()

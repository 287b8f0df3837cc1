"""A rate limit counted in the cache, shared by every process and machine that shares it.

At most `limit` events per key in fixed windows of `window` seconds on the wall clock: an
`add` of the window's counter, then an `incr` (atomic in memcached, so concurrent events
past the limit are all refused, never one too many let through). When the cache cannot
count (a server down, the cache off), events go ahead: the limit fails open.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .client import CacheClient
from .keys import KeyKinds


@dataclass
class RateLimit:
    """`limit` events named `name` per key per `window` seconds, counted in `client`."""

    client: CacheClient
    name: str
    limit: int
    window: int = 60
    clock: Callable[[], float] = time.time

    async def take(self, key: str) -> float | None:
        """Count an event for `key`: None if it may go ahead, else the seconds until the
        window ends and `key` may act again."""
        now = self.clock()
        window = int(now // self.window)
        counter = self.client.keys.key(KeyKinds.LIMIT, self.name, key, window)
        count = await self.client.count(counter, self.window + 1)
        if count is None or count <= self.limit:
            return None
        return (window + 1) * self.window - now

"""Many deadlines, one timer.

Every cache operation has a deadline, and so does every wait for a pooled connection. The
items sit in a dict with their deadlines and one `loop.call_at`, armed for the earliest,
expires the overdue ones: adding and removing an item is a dict insert and delete, where an
`asyncio.timeout` per operation would schedule and cancel a timer handle each time
(docs/PERFORMANCE.md, "Cache client").
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable


class Deadlines[T: Hashable]:
    """Calls `expire(item)` once an item added with a timeout is still here past it."""

    def __init__(self, expire: Callable[[T], None]) -> None:
        self._expire = expire
        self._due: dict[T, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def add(self, item: T, timeout: float) -> float:
        """Watch `item` for `timeout` seconds; returns its deadline in `loop.time()` terms."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._due[item] = deadline
        timer = self._timer
        if timer is None or self._loop is not loop or deadline < timer.when():
            if timer is not None:
                timer.cancel()
            self._loop = loop
            self._timer = loop.call_at(deadline, self._fire)
        return deadline

    def discard(self, item: T) -> None:
        self._due.pop(item, None)

    def _fire(self) -> None:
        self._timer = None
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        now = loop.time()
        overdue = [item for item, deadline in self._due.items() if deadline <= now]
        for item in overdue:
            del self._due[item]
            self._expire(item)
        if self._due:
            self._timer = loop.call_at(min(self._due.values()), self._fire)

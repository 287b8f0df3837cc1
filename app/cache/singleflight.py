"""Single-flight: concurrent calls for one key in one process share one load."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any


class SingleFlight:
    """`run(key, load)` starts `load()` unless a load for `key` is already running, and
    awaits that one. Cancelling a waiter never cancels the shared load (the others still
    need it); a load's exception reaches every waiter."""

    def __init__(self) -> None:
        self._running: dict[Hashable, asyncio.Task[Any]] = {}

    async def run[T](self, key: Hashable, load: Callable[[], Awaitable[T]]) -> T:
        task = self._running.get(key)
        if task is None:
            task = asyncio.ensure_future(load())
            self._running[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(task)

    def in_flight(self, key: Hashable) -> bool:
        return key in self._running

    def _finished(self, key: Hashable, task: asyncio.Task[Any]) -> None:
        if self._running.get(key) is task:
            del self._running[key]
        if not task.cancelled():
            task.exception()  # retrieved, so that no waiter-less failure is logged as lost

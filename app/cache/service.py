"""The cache-aside service: generations, stampede-safe reads and `memoize`.

It knows nothing of tasks or HTTP. Callers name the topics their data depends on;
whoever changes that data bumps those topics after committing.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import wraps
from typing import Any

from .client import CacheClient
from .entry import Entry
from .generations import Generations
from .keys import KeyKinds
from .singleflight import SingleFlight

log = logging.getLogger(__name__)

Loader = Callable[[], Awaitable[Any]]
_UNKEYED = frozenset({"self", "cls"})  # a method's instance or class: not in its keys


@dataclass(frozen=True)
class Leases:
    """Cross-process stampede control: one process recomputes a key while the others
    wait up to `wait` seconds (polling every `poll`) for its value."""

    ttl: int = 10
    wait: float = 0.5
    poll: float = 0.005


class CacheService:
    def __init__(
        self,
        client: CacheClient,
        *,
        leases: Leases | None = None,
        clock: Callable[[], float] = time.time,
        enabled: bool = True,
    ) -> None:
        """`enabled=False` switches caching off (for measurements): memoized functions
        run uncached and bumps do nothing, so no value is encoded for a cache that keeps
        nothing."""
        self.client = client
        self.enabled = enabled
        self.keys = client.keys
        self.generations = Generations(client)
        self.leases = leases or Leases()
        self.clock = clock
        self._flights = SingleFlight()
        self._refreshes: set[asyncio.Task[None]] = set()

    async def bump(self, *topics: str) -> bool:
        """Invalidate everything that depends on `topics` (call after commit); False if
        the cache could not be told (see `Generations.bump`)."""
        return await self.generations.bump(*topics) if self.enabled else True

    async def fetch(
        self, key: str, load: Loader, *, ttl: int, soft_ttl: float | None = None
    ) -> Any:
        """Cache-aside read of `key`, loading and storing it on a miss.

        A fresh hit is returned as it is. Past its `soft_ttl` the stale value is returned
        at once while one refresh runs in the background (one per process, and one across
        processes thanks to an `add` lease). Concurrent misses in this process share one
        load; across processes the lease holder loads and the others wait briefly for its
        value before loading themselves. `ttl` is the hard expiry in seconds.
        """
        entry = await self.client.get(key)
        if entry is not None:
            if entry.is_stale(self.clock()):

                async def reload() -> None:
                    await self.client.set(key, await load(), ttl, soft_ttl=soft_ttl)

                self.refresh_in_background(key, reload)
            return entry.value
        return await self._flights.run(key, lambda: self._load(key, load, ttl, soft_ttl))

    async def _load(self, key: str, load: Loader, ttl: int, soft_ttl: float | None) -> Any:
        lease = await self._take_lease(key, "load")
        if lease is None:
            entry = await self.wait_for(key, lambda _: True)  # any value: its key is versioned
            if entry is not None:
                return entry.value
        try:
            value = await load()
        except BaseException:
            if lease is not None:  # let another process try at once
                await self._release_lease(key, "load", lease)
            raise
        # The lease is left to expire: the value it guarded is in place, and two round
        # trips per miss (get, delete) are saved.
        await self.client.set(key, value, ttl, soft_ttl=soft_ttl)
        return value

    async def claim(self, key: str, *version: str) -> str | None:
        """A lease token if this process may compute `key` at `version` (e.g. the
        generation tokens it was read under); None while another process holds the lease,
        for `Leases.ttl` at most. A token when the cache cannot tell (see `_take_lease`)."""
        return await self._take_lease(key, "load", *version)

    async def release(self, key: str, token: str, *version: str) -> None:
        """Give up a lease `claim` returned: the processes waiting for `key` stop waiting
        (see `wait_for`) rather than at the end of their wait."""
        await self._release_lease(key, "load", token, *version)

    async def wait_for(
        self, key: str, usable: Callable[[Entry], bool], *version: str
    ) -> Entry | None:
        """The entry under `key` once it is `usable`, while another process holds the lease
        to compute it at `version` (see `claim`): polled for up to `Leases.wait`. None if it
        did not come, or the lease went without it (released, or expired)."""
        lease_key = self._lease_key(key, "load", *version)
        deadline = self.clock() + self.leases.wait
        while True:
            found = await self.client.get_many([key, lease_key])
            entry = found.get(key)
            if entry is not None and usable(entry):
                return entry
            if lease_key not in found or self.clock() >= deadline:
                return None
            await asyncio.sleep(self.leases.poll)

    def refresh_in_background(self, key: str, refresh: Callable[[], Awaitable[None]]) -> None:
        """Run `refresh()` in the background, unless `key` is already being refreshed by
        this process (single-flight) or by another one (it holds the lease)."""
        flight = ("refresh", key)
        if self._flights.in_flight(flight):
            return

        async def leased() -> None:
            lease = await self._take_lease(key, "refresh")
            if lease is None:
                return
            try:
                await refresh()
            except Exception:
                log.exception("background refresh of a cache entry failed")
            finally:
                await self._release_lease(key, "refresh", lease)

        task = asyncio.ensure_future(self._flights.run(flight, leased))
        self._refreshes.add(task)
        task.add_done_callback(self._refreshes.discard)

    async def _take_lease(self, key: str, purpose: str, *version: str) -> str | None:
        """A lease token if this process may compute `key`; `None` if another holds it.

        With the cache failing there is nobody to coordinate with: compute (a lease `add`
        cannot tell "taken" from "server down").
        """
        token = secrets.token_hex(8)
        if await self.client.add(self._lease_key(key, purpose, *version), token, self.leases.ttl):
            return token
        return None if self.client.healthy() else token

    async def _release_lease(self, key: str, purpose: str, token: str, *version: str) -> None:
        lease_key = self._lease_key(key, purpose, *version)
        entry = await self.client.get(lease_key)
        if entry is not None and entry.value == token:
            await self.client.delete(lease_key)

    def _lease_key(self, key: str, purpose: str, *version: str) -> str:
        """A load (on a miss) and a refresh (of a stale value) lease apart: a load's lease is
        left to expire once its value is stored, and must not hold up the first refresh."""
        parts = (key, *version) if purpose == "load" else (purpose, key, *version)
        return self.keys.key(KeyKinds.LEASE, *parts)

    def memoize(
        self,
        timeout: int = 300,
        *,
        soft_timeout: float | None = None,
        topics: Sequence[str] = (),
    ) -> Callable[[Callable[..., Awaitable[Any]]], Memoized]:
        """Cache an async function's results, keyed by its normalised arguments.

        Arguments are bound to the signature with defaults applied, so `f(1, b=2)` and
        `f(a=1, b=2)` share an entry; `self` and `cls` are left out. `topics` are
        generation topics the result depends on, and may name arguments
        (`"task-{task_id}"`). A result of `None` is cached like any other. A hit costs two
        round trips: one `get_many` of the generations, one `get` of the value.
        """

        def decorator(function: Callable[..., Awaitable[Any]]) -> Memoized:
            return Memoized(self, function, timeout, soft_timeout, tuple(topics))

        return decorator

    async def close(self) -> None:
        """Wait for background refreshes to finish (bounded), then close the client."""
        if self._refreshes:
            await asyncio.wait(self._refreshes, timeout=5)
        await self.client.close()


class Memoized:
    """An async function wrapped by `CacheService.memoize`; call it like the function.

    Its name in the keys is the function's module and qualified name, the same in every
    process.
    """

    def __init__(
        self,
        service: CacheService,
        function: Callable[..., Awaitable[Any]],
        timeout: int,
        soft_timeout: float | None,
        topics: tuple[str, ...],
    ) -> None:
        wraps(function)(self)
        self.service = service
        self.uncached = function
        self.name = f"{function.__module__}.{function.__qualname__}"
        self.cache_timeout = timeout
        self.soft_timeout = soft_timeout
        self.topics = topics
        self.generation = f"memoize.{self.name}"
        self._signature = inspect.signature(function)

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.service.enabled:
            return await self.uncached(*args, **kwargs)
        key = await self.make_cache_key(*args, **kwargs)
        return await self.service.fetch(
            key,
            lambda: self.uncached(*args, **kwargs),
            ttl=self.cache_timeout,
            soft_ttl=self.soft_timeout,
        )

    async def make_cache_key(self, *args: Any, **kwargs: Any) -> str:
        """The data key of this call under the current generations (reads them)."""
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = {k: v for k, v in bound.arguments.items() if k not in _UNKEYED}
        topics = [self.generation, *(ns.format(**bound.arguments) for ns in self.topics)]
        tokens = await self.service.generations.current(topics)
        normalised = json.dumps(arguments, sort_keys=True, default=repr, separators=(",", ":"))
        return self.service.keys.key(
            KeyKinds.MEMOIZE, self.name, *(tokens[ns] for ns in topics), normalised
        )

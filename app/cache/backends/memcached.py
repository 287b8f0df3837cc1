"""The memcached backend: several servers on a ketama-compatible ring, over aiomcache.

Keys of a retrying or dead server are misses (its writes are dropped); they are never
remapped to another server. See `server.py` for the failover rules and `pool.py` for the
deadlines.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence

from uhashring import HashRing

from ..keys import validate_key
from .auth import AuthMode, Credentials
from .base import PartialResult, ServerStatus
from .pool import ConnectionPool
from .protocol import Codec
from .server import Server

# Keys memoized (validated bytes, ring lookups) per process. Many keys are used once: a
# memoized result's key holds its generation tokens, so every write makes new ones. A larger
# bound only holds more dead keys; this one hits as often (docs/RELIABILITY.md, "Findings",
# the one on worker RSS).
MEMO_SIZE = 8_192


class MemcachedBackend:
    """memcached over aiomcache's codec with our own pools, deadlines and failover.

    `servers` are ``"host:port"`` strings. Nothing connects until the first operation.
    The deadlines (seconds), pool size and failure limit have no defaults here: the app's
    are its settings (`app.state.make_cache_client`).
    """

    name = "memcached"

    def __init__(
        self,
        servers: Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        auth_mode: AuthMode,
        connect_timeout: float,
        op_timeout: float,
        pool_size: int,
        retry_timeout: float,
        dead_timeout: float,
        failure_limit: int,
    ) -> None:
        if not servers:
            raise ValueError("MemcachedBackend needs at least one server")
        credentials = Credentials(username, password) if username and password else None
        self._codec = Codec()
        self.servers: dict[str, Server] = {}
        for address in dict.fromkeys(servers):
            host, _, port = address.rpartition(":")
            pool = ConnectionPool(
                host, int(port), size=pool_size, connect_timeout=connect_timeout,
                credentials=credentials, auth_mode=auth_mode,
            )
            self.servers[pool.address] = Server(
                pool, self._codec, op_timeout=op_timeout, retry_timeout=retry_timeout,
                dead_timeout=dead_timeout, failure_limit=failure_limit,
            )
        # a key's bytes, validated once (raises `InvalidKey`; errors are not memoized)
        self._raw = functools.lru_cache(maxsize=MEMO_SIZE)(validate_key)
        addresses = list(self.servers)
        self._only = addresses[0] if len(addresses) == 1 else None
        self._lookup = _ring_lookup(addresses)

    def server_for(self, key: str) -> str:
        return self._only or self._lookup(key)

    def _server(self, key: str) -> Server:
        return self.servers[self._only or self._lookup(key)]

    async def get(self, key: str) -> bytes | None:
        names = {self._raw(key): key}
        found = await self._get_group(self.server_for(key), names)
        return found.get(key)

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """One ``get`` per server, the servers concurrently; raises `PartialResult` if any
        server failed (with what the others returned)."""
        to_raw = self._raw
        if self._only is not None:  # one server: no grouping, no PartialResult
            names = {to_raw(key): key for key in keys}
            return await self._get_group(self._only, names) if names else {}
        groups: dict[str, dict[bytes, str]] = {}
        for key in keys:
            groups.setdefault(self.server_for(key), {})[to_raw(key)] = key
        if len(groups) > 1:
            return await self._get_groups(groups)
        for address, names in groups.items():
            return await self._get_group(address, names)
        return {}

    async def _get_groups(self, groups: dict[str, dict[bytes, str]]) -> dict[str, bytes]:
        """`_get_group` on each server at once; `PartialResult` if any failed."""
        results = await asyncio.gather(
            *(self._get_group(address, names) for address, names in groups.items()),
            return_exceptions=True,
        )
        found: dict[str, bytes] = {}
        errors: dict[str, BaseException] = {}
        for address, result in zip(groups, results, strict=True):
            if isinstance(result, BaseException):
                errors[address] = result
            else:
                found.update(result)
        if errors:
            raise PartialResult(found, errors)
        return found

    async def _get_group(self, address: str, names: dict[bytes, str]) -> dict[str, bytes]:
        return await self.servers[address].call(
            lambda conn: self._codec.get_many(conn, names), write=False
        )

    async def set(self, key: str, value: bytes, ttl: int, *, urgent: bool = False) -> bool:
        return await self._store(b"set", key, value, ttl, urgent)

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        return await self._store(b"add", key, value, ttl, False)

    async def _store(
        self, command: bytes, key: str, value: bytes, ttl: int, urgent: bool
    ) -> bool:
        raw = self._raw(key)
        return await self._server(key).call(
            lambda conn: self._codec.store(conn, command, raw, value, ttl),
            write=True,
            urgent=urgent,
        )

    async def delete(self, key: str, *, urgent: bool = False) -> bool:
        raw = self._raw(key)
        return await self._server(key).call(
            lambda conn: self._codec.delete_key(conn, raw), write=True, urgent=urgent
        )

    async def incr(self, key: str, delta: int) -> int | None:
        raw = self._raw(key)
        return await self._server(key).call(
            lambda conn: self._codec.increment(conn, raw, delta), write=True
        )

    async def server_stats(self) -> list[ServerStatus]:
        """Each server's state and ``stats``; an unreachable server has empty stats."""
        results = await asyncio.gather(
            *(
                server.call(self._codec.server_stats, write=False)
                for server in self.servers.values()
            ),
            return_exceptions=True,
        )
        statuses = []
        for server, result in zip(self.servers.values(), results, strict=True):
            stats = {} if isinstance(result, BaseException) else _parse_stats(result)
            statuses.append(ServerStatus(server.address, server.state, stats))
        return statuses

    def healthy(self) -> bool:
        return all(
            server.state == "up" and not server.pool.saturated for server in self.servers.values()
        )

    async def close(self) -> None:
        for server in self.servers.values():
            server.pool.clear()


def _ring_lookup(addresses: list[str]) -> Callable[[str], str]:
    """The server of a key on the ketama ring of `addresses`, memoized: the ring never
    changes (dead servers are skipped, not removed)."""
    if len(addresses) == 1:
        return lambda key: addresses[0]
    ring = HashRing(addresses, hash_fn="ketama")
    get_node: Callable[[str], str] = ring.get_node
    return functools.lru_cache(maxsize=MEMO_SIZE)(get_node)


def _parse_stats(raw: dict[bytes, bytes | None]) -> dict[str, str | int | float]:
    """memcached's ``stats`` reply, each value as an int, else a float, else the text."""
    return {
        name.decode("ascii", "replace"): _number((value or b"").decode("ascii", "replace"))
        for name, value in raw.items()
    }


def _number(text: str) -> str | int | float:
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return text

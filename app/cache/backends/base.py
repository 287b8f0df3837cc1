"""The bytes-level backend protocol both cache backends implement.

Backends may raise; `CacheClient` turns every exception into a counted miss or no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

ServerState = Literal["up", "retrying", "dead"]
MAX_TTL = 30 * 24 * 3600  # memcached reads a larger exptime as an absolute Unix time


class ServerUnavailable(Exception):
    """The key's server is retrying or dead: the operation was skipped without I/O."""

    def __init__(self, server: str) -> None:
        super().__init__(f"cache server {server} is unavailable")
        self.server = server


class NotANumber(ValueError):
    """`incr` of a value that is not a decimal number: the key's fault, not the server's."""


class ValueTooLarge(Exception):
    """The server refused a value over its item size limit."""


class PartialResult(Exception):
    """`get_many` reached some servers but not others.

    `found` holds what the reachable servers returned; `errors` maps each failed server's
    address to its exception.
    """

    def __init__(self, found: dict[str, bytes], errors: dict[str, BaseException]) -> None:
        super().__init__(f"get_many failed on {len(errors)} server(s)")
        self.found = found
        self.errors = errors


@dataclass(frozen=True)
class ServerStatus:
    """One server as seen by this process; `stats` is memcached's ``stats`` (empty if unread)."""

    address: str
    state: ServerState
    stats: dict[str, str | int | float] = field(default_factory=dict)


class CacheBackend(Protocol):
    """Keys are strings that `validate_key` accepts; TTLs are whole seconds, 1..`MAX_TTL`."""

    name: str

    async def get(self, key: str) -> bytes | None: ...

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """Found keys only; may raise `PartialResult`."""
        ...

    async def set(self, key: str, value: bytes, ttl: int, *, urgent: bool = False) -> bool:
        """Store the value. An `urgent` write (an invalidation) is attempted even while
        its server is being skipped after failures."""
        ...

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        """Store only if the key is absent; False if it exists."""
        ...

    async def delete(self, key: str, *, urgent: bool = False) -> bool:
        """True if the key existed; `urgent` as for `set`."""
        ...

    async def incr(self, key: str, delta: int) -> int | None:
        """Add `delta` to the decimal number stored at `key`, atomically: the new number,
        or None if the key is absent."""
        ...

    async def server_stats(self) -> list[ServerStatus]: ...

    def server_for(self, key: str) -> str:
        """The address of the server that owns `key` (used to attribute counters)."""
        ...

    def healthy(self) -> bool:
        """True when no server is retrying, dead, or has every connection held."""
        ...

    async def close(self) -> None: ...

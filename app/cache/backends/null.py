"""A backend that stores nothing: the cache switched off (`CACHE_ENABLED=0`)."""

from __future__ import annotations

from collections.abc import Sequence

from .base import ServerStatus

ADDRESS = "null"


class NullBackend:
    """Every read misses and every write is accepted and forgotten. `add` succeeds, so
    leases and generation tokens behave as if this process were alone."""

    name = "null"

    async def get(self, key: str) -> bytes | None:
        return None

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        return {}

    async def set(self, key: str, value: bytes, ttl: int, *, urgent: bool = False) -> bool:
        return True

    async def add(self, key: str, value: bytes, ttl: int) -> bool:
        return True

    async def incr(self, key: str, delta: int) -> int | None:
        return None  # nothing is stored, so nothing is counted

    async def delete(self, key: str, *, urgent: bool = False) -> bool:
        return False

    async def server_stats(self) -> list[ServerStatus]:
        return [ServerStatus(ADDRESS, "up", {"enabled": 0})]

    def server_for(self, key: str) -> str:
        return ADDRESS

    def healthy(self) -> bool:
        return True

    async def close(self) -> None:
        return None

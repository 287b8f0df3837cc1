"""Generation tokens: key-based invalidation for topics of cached data.

Readers fetch the tokens of the topics they depend on *before* they query the
database and put them in their data keys; writers replace the tokens *after* commit. A
reader that raced a writer therefore stores under a token nobody reads any more. Tokens
are random, never counters: a token lost to eviction, flush or restart is re-created with
a fresh value (via `add`, so concurrent readers agree), and old entries cannot come back.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable

from .backends.base import MAX_TTL
from .client import CacheClient
from .keys import KeyKinds

# Tokens outlive every data entry (all data TTLs are shorter): a token that expired with the
# first entry stored under it would make the entries stored later unreachable before their
# own TTL (misses, and memory held for nothing).
TOKEN_TTL = MAX_TTL


def new_token() -> str:
    return secrets.token_urlsafe(9)


class Generations:
    def __init__(self, client: CacheClient) -> None:
        self.client = client

    def key(self, topic: str) -> str:
        return self.client.keys.key(KeyKinds.GENERATION, topic)

    async def current(self, topics: Iterable[str]) -> dict[str, str]:
        """The token of each topic, in one `get_many`; missing ones are created.

        With the cache unreachable every token is a fresh random one, so nothing that
        depends on it can hit: a failing cache means misses, never stale data.
        """
        keys = {topic: self.key(topic) for topic in topics}
        found = await self.client.get_many(list(keys.values()))
        tokens: dict[str, str] = {}
        missing: list[str] = []
        for topic, key in keys.items():
            entry = found.get(key)
            if entry is not None and isinstance(entry.value, str):
                tokens[topic] = entry.value
            else:
                missing.append(topic)
        if missing:
            created = await asyncio.gather(*(self._create(keys[ns]) for ns in missing))
            tokens.update(zip(missing, created, strict=True))
        return tokens

    async def bump(self, *topics: str) -> bool:
        """Replace the tokens of `topics`: everything cached under the old ones is dead.
        False if any token could not be written (its server did not answer).

        Call it after the transaction commits, never inside it: a reader could otherwise
        read the new token, then the old rows, and cache them under the new token. The
        writes are urgent: not skipped while this process counts the server as failed,
        because another process may already be reading from it again.
        """
        written = await asyncio.gather(
            *(
                self.client.set(self.key(ns), new_token(), TOKEN_TTL, urgent=True)
                for ns in topics
            )
        )
        return all(written)

    async def _create(self, key: str) -> str:
        token = new_token()
        if await self.client.add(key, token, TOKEN_TTL):
            return token
        # Another reader created it first (or the cache is down: then `get` misses too).
        entry = await self.client.get(key)
        if entry is not None and isinstance(entry.value, str):
            return entry.value
        return token

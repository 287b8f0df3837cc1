"""memcached's text protocol on one connection we own, using aiomcache's codec.

aiomcache's public methods borrow a connection from its own pool, which hands back
connections with an unread reply after a cancellation (aiomcache #91). Here the codec runs
on a connection the caller holds, so the caller decides whether the connection is reusable.
`_execute_simple_command` is replaced because aiomcache's loops forever on EOF (#502).
"""

from __future__ import annotations

import aiomcache
from aiomcache.exceptions import ClientException
from aiomcache.pool import Connection

from .base import ValueTooLarge

__all__ = ["Connection", "ConnectionClosed", "CommandRejected", "Codec"]


class ConnectionClosed(ClientException):
    """The server closed the connection before a complete reply."""


class CommandRejected(ClientException):
    """A ``CLIENT_ERROR`` reply: our command was refused, the connection is still in sync."""


class Codec(aiomcache.Client):
    """aiomcache's command encoding and reply parsing, minus its pool (never created)."""

    def __init__(self) -> None:  # no super(): its pool would go unused
        self._get_flag_handler = None
        self._set_flag_handler = None

    async def _execute_simple_command(self, conn: Connection, raw_command: bytes) -> bytes:
        conn.writer.write(raw_command)
        await conn.writer.drain()
        line = await conn.reader.readline()
        if not line.endswith(b"\r\n"):  # readline returns a partial line only at EOF
            raise ConnectionClosed("connection closed by the server")
        return line[:-2]

    async def get_many(self, conn: Connection, keys: list[bytes]) -> dict[bytes, bytes]:
        found, _ = await self._multi_get(conn, *keys, with_cas=False)
        return found  # type: ignore[return-value]

    async def store(
        self, conn: Connection, command: bytes, key: bytes, value: bytes, ttl: int
    ) -> bool:
        try:
            return await self._storage_command(conn, command, key, value, ttl)
        except ConnectionClosed:
            raise
        except ClientException as exc:
            if "SERVER_ERROR object too large" in str(exc):
                raise ValueTooLarge("the server refused the value: too large") from None
            raise

    async def delete_key(self, conn: Connection, key: bytes) -> bool:
        return await aiomcache.Client.delete.__wrapped__(self, conn, key)  # type: ignore[attr-defined]

    async def touch_key(self, conn: Connection, key: bytes, ttl: int) -> bool:
        return await aiomcache.Client.touch.__wrapped__(self, conn, key, ttl)  # type: ignore[attr-defined]

    async def flush(self, conn: Connection) -> None:
        await aiomcache.Client.flush_all.__wrapped__(self, conn)  # type: ignore[attr-defined]

    async def server_stats(self, conn: Connection) -> dict[bytes, bytes | None]:
        return await aiomcache.Client.stats.__wrapped__(self, conn)  # type: ignore[attr-defined]

    async def incr_key(self, conn: Connection, key: bytes, delta: int) -> int | None:
        """aiomcache raises on ``NOT_FOUND`` (#431); here a missing key is ``None``."""
        command = b"incr" if delta >= 0 else b"decr"
        reply = await self._execute_simple_command(
            conn, b"%b %b %d\r\n" % (command, key, abs(delta))
        )
        if reply.isdigit():
            return int(reply)
        if reply == b"NOT_FOUND":
            return None
        if reply.startswith(b"CLIENT_ERROR"):
            raise CommandRejected("incr refused: the value is not a decimal counter")
        raise ClientException("unexpected reply to incr")

"""memcached's text protocol on one connection we own, using aiomcache's codec.

aiomcache's public methods borrow a connection from its own pool, which hands back
connections with an unread reply after a cancellation (aiomcache #91). Here the codec runs
on a connection the caller holds, so the caller decides whether the connection is reusable.
`_execute_simple_command` is replaced because aiomcache's loops forever on EOF (#502).
Retrieval replies are parsed here too (`get_many`): aiomcache awaits a ``readline`` and a
``readexactly`` per key; we scan what the reader already holds, awaiting only for more bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import aiomcache
from aiomcache.exceptions import ClientException
from aiomcache.pool import Connection

from .base import ValueTooLarge

_CHUNK = 1 << 16
_MAX_HEADER = 512  # "VALUE <key of <= 250 bytes> <flags> <bytes>" fits many times over
_ABSENT: Any = object()
K = TypeVar("K")

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

    async def get_many(self, conn: Connection, names: Mapping[bytes, K]) -> dict[K, bytes]:
        """``get k1 k2 ...`` for the keys of `names` (valid, distinct): the values found, each
        under its key's name (``names[key]``; the caller's own key strings, so nothing is
        re-keyed after the parse).

        Raises `ConnectionClosed` on EOF before ``END``, `ClientException` on anything but
        ``VALUE``/``END`` lines, a flagged value, a malformed or misplaced data block, a key we
        did not ask for or got twice, or bytes after ``END`` (a desynchronised connection).
        """
        conn.writer.write(b"get " + b" ".join(names) + b"\r\n")
        read = conn.reader.read
        name_of = names.get
        found: dict[K, bytes] = {}
        buf = b""
        size = pos = 0
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:  # no complete line yet
                if size - pos > _MAX_HEADER:
                    raise ClientException("get failed: reply line too long")
                more = await read(_CHUNK)
                if not more:
                    raise ConnectionClosed("connection closed by the server")
                buf = buf[pos:] + more if pos < size else more
                size = len(buf)
                pos = 0
                continue
            line = buf[pos:eol]
            if line == b"END":
                if eol + 2 != size:
                    raise ClientException("get failed: bytes after END")
                return found
            terms = line.split()
            if len(terms) != 4 or terms[0] != b"VALUE":
                raise ClientException("get failed", line[:80])
            _, key, flags, length_text = terms
            if flags != b"0" and int(flags):
                raise ClientException("received flags without handler")
            length = int(length_text)
            name = name_of(key, _ABSENT)
            if length < 0 or name is _ABSENT or name in found:
                raise ClientException("get failed: unexpected VALUE line")
            start = eol + 2
            end = start + length
            if end + 2 <= size:
                if not buf.startswith(b"\r\n", end):
                    raise ClientException("get failed: malformed data block")
                found[name] = buf[start:end]
                pos = end + 2
            else:  # the rest of this block is still to come: await exactly that much
                block = buf[start:] + await conn.reader.readexactly(end + 2 - size)
                if not block.endswith(b"\r\n"):
                    raise ClientException("get failed: malformed data block")
                found[name] = block[:-2]
                buf, size, pos = b"", 0, 0

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

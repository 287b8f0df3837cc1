"""memcached's text protocol on a connection the caller holds: the one module that uses
aiomcache's internals, because its public methods borrow connections from its own pool,
which hands one back with an unread reply after a cancellation (aiomcache #91).

`Codec` is aiomcache's client used as a codec: its command encoding and reply parsing run on
the caller's connection (its own pool is made and never used). Its `_execute_simple_command`
is replaced (it loops forever on EOF, #502), and retrieval replies are parsed here
(`get_many`). tests/integration/cache/test_aiomcache_adapter.py fails if what this module
relies on in aiomcache changes.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiomcache
from aiomcache.exceptions import ClientException
from aiomcache.pool import Connection

from .base import NotANumber, ValueTooLarge

UNUSED_POOL_HOST = "aiomcache-pool-unused.invalid"
_CHUNK = 1 << 16
_MAX_HEADER = 512  # "VALUE <key of <= 250 bytes> <flags> <bytes>" fits many times over
_ABSENT: Any = object()

__all__ = ["Connection", "ConnectionClosed", "Codec"]


class ConnectionClosed(ClientException):
    """The server closed the connection before a complete reply."""


class Codec(aiomcache.Client):
    """aiomcache's command encoding and reply parsing, on connections the caller holds."""

    def __init__(self) -> None:
        super().__init__(UNUSED_POOL_HOST, pool_size=1)  # the pool never opens a connection

    async def _execute_simple_command(self, conn: Connection, raw_command: bytes) -> bytes:
        conn.writer.write(raw_command)
        await conn.writer.drain()
        line = await conn.reader.readline()
        if not line.endswith(b"\r\n"):  # readline returns a partial line only at EOF
            raise ConnectionClosed("connection closed by the server")
        return line[:-2]

    async def get_many[K](self, conn: Connection, names: Mapping[bytes, K]) -> dict[K, bytes]:
        """``get k1 k2 ...`` for the keys of `names` (valid, distinct): the values found, each
        under its key's name (``names[key]``; the caller's own key strings, so nothing is
        re-keyed after the parse).

        Raises `ConnectionClosed` on EOF before ``END``, `ClientException` on anything but
        ``VALUE``/``END`` lines, a flagged value, a malformed or misplaced data block, a key we
        did not ask for or got twice, or bytes after ``END`` (a desynchronised connection).
        """
        conn.writer.write(b"get " + b" ".join(names) + b"\r\n")
        read = conn.reader.read
        found: dict[K, bytes] = {}
        buf = b""
        size = pos = 0
        while True:
            eol = buf.find(b"\r\n", pos)
            if eol < 0:  # no complete line yet
                buf, pos = await _read_more(read, buf, pos), 0
                size = len(buf)
                continue
            line = buf[pos:eol]
            if line == b"END":
                if eol + 2 != size:
                    raise ClientException("get failed: bytes after END")
                return found
            name, length = _value_line(line, names, found)
            start = eol + 2
            end = start + length
            if end + 2 <= size:  # the whole data block is in the buffer
                found[name] = _data_block(buf, start, end)
                pos = end + 2
            else:  # the rest of this block is still to come: await exactly that much
                rest = await conn.reader.readexactly(end + 2 - size)
                found[name] = _data_block(buf[start:] + rest, 0, length)
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

    async def increment(self, conn: Connection, key: bytes, delta: int) -> int | None:
        """``incr``: the new value, or None when the key is absent (aiomcache raises)."""
        reply = await self._execute_simple_command(conn, b"incr %b %d\r\n" % (key, delta))
        if reply == b"NOT_FOUND":
            return None
        if reply.startswith(b"CLIENT_ERROR"):  # "cannot increment ... non-numeric value"
            raise NotANumber(reply.decode("latin-1"))
        if not reply.isdigit():
            raise ClientException("incr failed", reply)
        return int(reply)

    async def delete_key(self, conn: Connection, key: bytes) -> bool:
        return await _delete(self, conn, key)

    async def flush(self, conn: Connection) -> None:
        await _flush_all(self, conn)

    async def server_stats(self, conn: Connection) -> dict[bytes, bytes | None]:
        return await _stats(self, conn)


async def _read_more(read: Callable[[int], Awaitable[bytes]], buf: bytes, pos: int) -> bytes:
    """What is left of `buf` from `pos`, and the next chunk read; raises on EOF, or if what
    is left is already too long for a reply line."""
    if len(buf) - pos > _MAX_HEADER:
        raise ClientException("get failed: reply line too long")
    more = await read(_CHUNK)
    if not more:
        raise ConnectionClosed("connection closed by the server")
    return buf[pos:] + more if pos < len(buf) else more


def _value_line[K](
    line: bytes, names: Mapping[bytes, K], found: dict[K, bytes]
) -> tuple[K, int]:
    """The name and the data length a ``VALUE <key> <flags> <bytes>`` line announces."""
    terms = line.split()
    if len(terms) != 4 or terms[0] != b"VALUE":
        raise ClientException("get failed", line[:80])
    _, key, flags, length_text = terms
    if flags != b"0" and int(flags):
        raise ClientException("received flags without handler")
    length = int(length_text)
    name = names.get(key, _ABSENT)
    if length < 0 or name is _ABSENT or name in found:
        raise ClientException("get failed: unexpected VALUE line")
    return name, length


def _data_block(buf: bytes, start: int, end: int) -> bytes:
    """The data from `start` to `end`, which ``\\r\\n`` must follow."""
    if not buf.startswith(b"\r\n", end):
        raise ClientException("get failed: malformed data block")
    return buf[start:end]


# aiomcache's commands without the decorator that borrows a connection from its pool: the
# functions it wraps, which take the connection as their first argument after `self`.
_delete: Callable[[aiomcache.Client, Connection, bytes], Awaitable[bool]] = inspect.unwrap(
    aiomcache.Client.delete
)
_flush_all: Callable[[aiomcache.Client, Connection], Awaitable[None]] = inspect.unwrap(
    aiomcache.Client.flush_all
)
_stats: Callable[[aiomcache.Client, Connection], Awaitable[dict[bytes, bytes | None]]] = (
    inspect.unwrap(aiomcache.Client.stats)
)

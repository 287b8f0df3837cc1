"""What app/cache/backends/protocol.py relies on in aiomcache, checked against a real
memcached: the internals it calls keep their shape, and the codec they make speaks the text
protocol on a connection of ours. A release of aiomcache that changes them fails here."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator

import aiomcache
import pytest
from aiomcache.pool import Connection

from app.cache.backends.base import NotANumber
from app.cache.backends.protocol import Codec
from tests.support.memcached import MemcachedProcess


def parameters(function: object) -> list[str]:
    return list(inspect.signature(inspect.unwrap(function)).parameters)  # type: ignore[arg-type]


def test_the_internals_used_keep_their_shape() -> None:
    client = aiomcache.Client
    assert parameters(client._execute_simple_command) == ["self", "conn", "raw_command"]
    assert parameters(client._storage_command)[:6] == [
        "self", "conn", "command", "key", "value", "exptime"
    ]
    assert parameters(client.delete) == ["self", "conn", "key"]
    assert parameters(client.flush_all) == ["self", "conn"]
    assert parameters(client.stats)[:2] == ["self", "conn"]
    codec = Codec()  # its constructor opens nothing
    assert codec._validate_key(b"a:key")  # what _storage_command calls


@pytest.fixture
async def connection(memcached: MemcachedProcess) -> AsyncIterator[Connection]:
    host, port = memcached.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield Connection(reader, writer)
    finally:
        writer.close()


async def test_the_codec_speaks_the_protocol_on_our_connection(connection: Connection) -> None:
    codec = Codec()
    assert await codec.store(connection, b"set", b"adapter:a", b"1", 60)
    assert not await codec.store(connection, b"add", b"adapter:a", b"2", 60)
    assert await codec.get_many(connection, {b"adapter:a": "a", b"adapter:b": "b"}) == {"a": b"1"}
    assert await codec.increment(connection, b"adapter:a", 41) == 42
    assert await codec.increment(connection, b"adapter:none", 1) is None
    await codec.store(connection, b"set", b"adapter:text", b"x", 60)
    with pytest.raises(NotANumber):
        await codec.increment(connection, b"adapter:text", 1)
    assert await codec.delete_key(connection, b"adapter:a")
    assert not await codec.delete_key(connection, b"adapter:a")
    stats = await codec.server_stats(connection)
    assert b"curr_items" in stats and b"uptime" in stats
    await codec.flush(connection)
    assert await codec.get_many(connection, {b"adapter:text": "t"}) == {}

"""Fault-injecting loopback servers for cache tests (all asyncio, on 127.0.0.1).

- `FakeMemcached`: answers ``get`` like memcached, with a chosen fault.
- `Blackhole`: a port whose accept queue is full, so a connect hangs (an honest connect
  deadline test without an unroutable address).
- `MemcachierShim`: accepts only MemCachier's auth form, then proxies to a real memcached.
- `CutProxy`: a TCP proxy in front of a real memcached that can be cut and restored on the
  same port, so the server behind it keeps its entries while unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Literal, Self

Fault = Literal["close_after_command", "garbage", "delay_first", "none"]


class _LoopbackServer:
    def __init__(self) -> None:
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            await self.handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop listening and drop every open connection (later connects are refused)."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await self._server.wait_closed()
            self._server = None


class FakeMemcached(_LoopbackServer):
    """Replies to ``get k`` with ``VALUE k 0 n`` / ``value-of-k`` / ``END`` and to anything
    else with ``STORED``, except for the chosen fault:

    - ``close_after_command``: reads one command line then closes;
    - ``garbage``: replies ``HELLO?`` to everything;
    - ``delay_first``: the first command of the server's life is answered after `delay` s.
    """

    def __init__(self, fault: Fault, *, delay: float = 0.0) -> None:
        super().__init__()
        self.fault = fault
        self.delay = delay
        self.commands: list[bytes] = []
        self.received_at: list[float] = []  # loop.time() of each command
        self.command_received = asyncio.Event()  # set once the first command has arrived

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            self.commands.append(line)
            self.received_at.append(asyncio.get_running_loop().time())
            self.command_received.set()
            verb, *args = line.split()
            if verb in (b"set", b"add"):
                await reader.readexactly(int(args[3]) + 2)
            if self.fault == "close_after_command":
                return
            if self.fault == "garbage":
                writer.write(b"HELLO?\r\n")
            else:
                if self.fault == "delay_first" and len(self.commands) == 1:
                    await asyncio.sleep(self.delay)
                writer.write(_reply(verb, args))
            await writer.drain()


def _reply(verb: bytes, args: list[bytes]) -> bytes:
    if verb in (b"get", b"gets"):
        values = b"".join(
            b"VALUE %b 0 %d\r\n%b\r\n" % (key, len(b"value-of-" + key), b"value-of-" + key)
            for key in args
        )
        return values + b"END\r\n"
    return b"STORED\r\n"


class MemcachierShim(_LoopbackServer):
    """MemCachier's ASCII auth: the first command must be ``set <user> 0 0 <n>`` with the
    password as value; anything else gets ``CLIENT_ERROR authentication failure`` and a close.
    Then bytes are proxied to `upstream` (``host:port``). With `store_handshake`, an accepted
    handshake is also stored upstream (a server that keeps it as an item behind auth)."""

    def __init__(
        self, upstream: str, username: str, password: str, *, store_handshake: bool = False
    ) -> None:
        super().__init__()
        self.upstream = upstream
        self.expected = b"set %b 0 0 %d\r\n%b\r\n" % (
            username.encode(), len(password.encode()), password.encode()
        )
        self.store_handshake = store_handshake
        self.accepted = self.rejected = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        parts = line.split()
        body = b""
        if len(parts) == 5 and parts[0] == b"set" and parts[4].isdigit():
            body = await reader.readexactly(int(parts[4]) + 2)
        if line + body != self.expected:
            self.rejected += 1
            writer.write(b"CLIENT_ERROR authentication failure\r\n")
            await writer.drain()
            return
        self.accepted += 1
        if self.store_handshake:
            host, _, port = self.upstream.rpartition(":")
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
            up_writer.write(self.expected)
            await up_reader.readline()
            up_writer.close()
        writer.write(b"STORED\r\n")
        await _pipe_to(self.upstream, reader, writer)


class CutProxy(_LoopbackServer):
    """A transparent proxy to `upstream`; `cut()` drops every connection and refuses new
    ones, `restore()` listens again on the same port."""

    def __init__(self, upstream: str) -> None:
        super().__init__()
        self.upstream = upstream

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _pipe_to(self.upstream, reader, writer)

    async def cut(self) -> None:
        await self.stop()

    async def restore(self) -> None:
        await self.start()

    @property
    def cut_off(self) -> bool:
        return self._server is None


async def _pipe_to(
    upstream: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    host, _, port = upstream.rpartition(":")
    up_reader, up_writer = await asyncio.open_connection(host, int(port))

    async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()

    try:
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
    finally:
        up_writer.close()


class Blackhole:
    """A listening socket that never accepts, with its accept queue already full: the
    kernel drops further SYNs, so a connect to `address` hangs until the caller gives up."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(0)
        self.port = self._listener.getsockname()[1]
        self._fillers = []
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", self.port))
            self._fillers.append(filler)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        for sock in (*self._fillers, self._listener):
            sock.close()

"""A partial partition between one app worker and memcached, for the chaos run.

The workers of one `app.serve` share their settings, so the partition cannot come from the
configuration: every memcached server is reached through a proxy that can tell, for each
connection, which process opened it (its socket in /proc), and `cut(pid)` drops that
process's connections and closes every new one it opens, while the other worker goes on as
before. The proxies run in a process of their own (`python -m tests.chaos.partition
UPSTREAM...`, driven over its stdin), so that they do not compete with the load for a GIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

import uvloop

from app.settings import PROJECT_ROOT


class WorkerPartition:
    """The proxies to `upstreams` ("host:port"); `addresses` is what the app is given."""

    def __init__(self, upstreams: Iterable[str]) -> None:
        self.upstreams = list(upstreams)
        self.addresses: list[str] = []
        self.dropped = 0  # the cut process's connections closed, open or new
        self._proc: subprocess.Popen[str] | None = None

    def start(self) -> WorkerPartition:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.partition", *self.upstreams],
            cwd=PROJECT_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.addresses = self._ask("").split()
        return self

    def cut(self, pid: int) -> None:
        """From now on, `pid` reaches no memcached server."""
        self._ask(f"cut {pid}")

    def restore(self) -> None:
        self.dropped = int(self._ask("restore"))

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait(timeout=5)

    def _ask(self, command: str) -> str:
        assert self._proc is not None and self._proc.stdin and self._proc.stdout
        if command:
            self._proc.stdin.write(command + "\n")
            self._proc.stdin.flush()
        return self._proc.stdout.readline().strip()


class Proxies:
    """The proxy process's side."""

    def __init__(self) -> None:
        self.cut_pid: int | None = None
        self.dropped = 0
        self._open: set[asyncio.StreamWriter] = set()

    async def listen(self, upstream: str) -> str:
        host, _, port = upstream.rpartition(":")

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self.cut_pid is not None and _opened_by(writer, self.cut_pid):
                self.dropped += 1
                writer.transport.abort()
                return
            self._open.add(writer)
            try:
                up_reader, up_writer = await asyncio.open_connection(host, int(port))
            except OSError:
                writer.transport.abort()
                return
            try:
                await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
            finally:
                up_writer.close()
                writer.close()
                self._open.discard(writer)

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        return f"127.0.0.1:{server.sockets[0].getsockname()[1]}"

    def cut(self, pid: int) -> None:
        self.cut_pid, self.dropped = pid, 0
        for writer in list(self._open):
            if _opened_by(writer, pid):
                self.dropped += 1
                writer.transport.abort()

    def restore(self) -> int:
        self.cut_pid = None
        return self.dropped


def _opened_by(writer: asyncio.StreamWriter, pid: int) -> bool:
    """Whether the other end of this loopback connection is a socket of process `pid`."""
    peer_port = writer.get_extra_info("peername")[1]
    local_port = writer.get_extra_info("sockname")[1]
    peer, local = f":{peer_port:04X}", f":{local_port:04X}"
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(peer) and fields[2].endswith(local):
            inode = fields[9]
            break
    if inode is None:
        return False
    target = f"socket:[{inode}]"
    for fd in Path(f"/proc/{pid}/fd").glob("*"):
        with contextlib.suppress(OSError):
            if os.readlink(fd) == target:
                return True
    return False


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    # RuntimeError: uvloop's, for a write to a transport `cut` has just aborted
    with contextlib.suppress(ConnectionError, RuntimeError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    sink.close()


async def serve(upstreams: list[str]) -> None:
    """Print the proxies' addresses, then obey `cut PID` and `restore` lines until EOF."""
    proxies = Proxies()
    addresses = [await proxies.listen(upstream) for upstream in upstreams]
    print(" ".join(addresses), flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        command, *args = line.split()
        if command == "cut":
            proxies.cut(int(args[0]))
            print("ok", flush=True)
        elif command == "restore":
            print(proxies.restore(), flush=True)


if __name__ == "__main__":
    uvloop.run(serve(sys.argv[1:]))

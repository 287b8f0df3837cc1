"""A TCP proxy that delays every chunk by a fixed time each way, and counts round trips.

    .venv/bin/python bench/delay_proxy.py --route [NAME=]LISTEN=UPSTREAM [--route ...]
        [--delay-ms 1.25] [--control 127.0.0.1:0]

A network between an app and its servers, for benchmarks on a machine whose kernel has no
`netem`. Each chunk read from either side is written to the other `--delay-ms` later; a new
connection's bytes also wait one round trip more at its start, as TCP's handshake would. The
delays run off one Linux timerfd (CLOCK_MONOTONIC, absolute deadlines in nanoseconds) over a
heap of due chunks, watched by the event loop like a socket: nothing spins, so the proxy idles
at 0% CPU and is on time to tens of microseconds. `--delay-ms 0` forwards at once: a pure
counting proxy. One process serves every `--route` (LISTEN port 0: a free port).

It counts, per route, the time (`time.monotonic()`: CLOCK_MONOTONIC, one clock for every
process on Linux) of each new connection and of each turn: on one proxied connection a turn
starts when the client sends after the server last spoke (or first). A turn is a round trip
(a statement, a command, a pipeline of them, a connection's set-up step).

Once listening it prints one JSON line: {"routes": {NAME: {"listen": "HOST:PORT", "upstream":
"HOST:PORT"}}, "control": "HOST:PORT"}. The control port takes one command a line and answers
one JSON line: `snapshot` ({NAME: {"connections": [t, ...], "turns": [t, ...]}}), `reset`
(clears them) and `take` (a snapshot, then reset). `DelayProxy` runs it for a benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import heapq
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, cast

EOF = b""  # a chunk that half-closes the other side
CLOSE = None  # a chunk that closes the other side once what it holds is written
Chunk = bytes | None


# --- the proxy ---------------------------------------------------------------------------


@dataclass
class Route:
    """Where one listening address forwards to, and what it has counted."""

    name: str
    listen: tuple[str, int]
    upstream: tuple[str, int]
    connections: list[float] = field(default_factory=list)
    turns: list[float] = field(default_factory=list)

    def counts(self) -> dict[str, list[float]]:
        return {"connections": list(self.connections), "turns": list(self.turns)}

    def reset(self) -> None:
        self.connections.clear()
        self.turns.clear()


class Timer:
    """One timerfd for the whole proxy over a heap of due chunks: each is written to its end
    at its time, in order of time (and of arrival, between equal times).

    A wake-up comes some tens of microseconds after the deadline it was set for (the kernel's
    and this VM's latency, then the event loop's): the timer learns that lateness (a moving
    average) and is set that much early, so that chunks leave on time on average rather than
    always late. A chunk never leaves more than that lead before its time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._fd = os.timerfd_create(time.CLOCK_MONOTONIC,
                                     flags=os.TFD_NONBLOCK | os.TFD_CLOEXEC)
        self._heap: list[tuple[int, int, End, Chunk]] = []
        self._order = itertools.count()
        self._armed: int | None = None  # the deadline the timer is set to, in ns
        self._ahead = False  # the timer was set to a deadline still ahead when set
        self.lead_ns = INITIAL_LEAD_NS
        loop.add_reader(self._fd, self._fire)

    def at(self, due_ns: int, end: End, chunk: Chunk) -> None:
        """Write `chunk` to `end` at `due_ns` (time.monotonic_ns())."""
        heapq.heappush(self._heap, (due_ns, next(self._order), end, chunk))
        if self._armed is None or due_ns - self.lead_ns < self._armed:
            self._arm(due_ns - self.lead_ns)

    def _arm(self, deadline_ns: int) -> None:
        os.timerfd_settime_ns(self._fd, flags=os.TFD_TIMER_ABSTIME, initial=max(1, deadline_ns))
        self._armed = deadline_ns
        self._ahead = deadline_ns > time.monotonic_ns()

    def _fire(self) -> None:
        try:
            os.read(self._fd, 8)  # the expiry count: clears the fd's readiness
        except BlockingIOError:
            pass
        now = time.monotonic_ns()
        if self._ahead and self._armed is not None:  # how late this wake-up came
            late = min(now - self._armed, MAX_LEAD_NS)
            self.lead_ns += (late - self.lead_ns) // LEAD_SMOOTHING
        self._armed = None
        heap, horizon = self._heap, now + self.lead_ns
        while heap and heap[0][0] <= horizon:
            _, _, end, chunk = heapq.heappop(heap)
            end.deliver(chunk)
        if heap:  # a deadline already past fires at once
            self._arm(heap[0][0] - self.lead_ns)


INITIAL_LEAD_NS = 30_000
MAX_LEAD_NS = 200_000  # a wake-up later than this (a busy machine) counts as this late
LEAD_SMOOTHING = 16


class End(asyncio.Protocol):
    """One side of a proxied connection (the client's or the upstream's): what it reads
    goes to the other side, through the link."""

    def __init__(self, link: Link, is_client: bool) -> None:
        self.link, self.is_client = link, is_client
        self.transport: asyncio.Transport | None = None
        self._early: list[Chunk] = []  # delivered before the upstream connection was made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        if self.is_client:
            self.link.accepted()
        early, self._early = self._early, []
        for chunk in early:
            self.deliver(chunk)

    def data_received(self, data: bytes) -> None:
        self.link.forward(self, data)

    def eof_received(self) -> bool:
        self.link.forward(self, EOF)
        return True  # keep the write half open until the other side closes too

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.forward(self, CLOSE)

    def pause_writing(self) -> None:
        self.link.other(self).pause_reading()

    def resume_writing(self) -> None:
        self.link.other(self).resume_reading()

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def deliver(self, chunk: Chunk) -> None:
        """Write `chunk` now (data, EOF or CLOSE); kept until connected if not yet."""
        transport = self.transport
        if transport is None:
            self._early.append(chunk)
        elif transport.is_closing():
            return
        elif chunk is CLOSE:
            transport.close()
        elif chunk == EOF:
            if transport.can_write_eof():
                transport.write_eof()
        else:
            transport.write(chunk)


class Link:
    """One proxied connection: its two ends, who spoke last, and when it started."""

    def __init__(self, proxy: Proxy, route: Route) -> None:
        self.proxy, self.route = proxy, route
        self.client = End(self, is_client=True)
        self.upstream = End(self, is_client=False)
        self.client_spoke_last = False
        self.started_ns = time.monotonic_ns()

    def other(self, end: End) -> End:
        return self.upstream if end is self.client else self.client

    def accepted(self) -> None:
        self.started_ns = time.monotonic_ns()
        self.route.connections.append(time.monotonic())
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: self.upstream, *self.route.upstream)
        except OSError:
            if self.client.transport is not None:
                self.client.transport.close()

    def forward(self, source: End, chunk: Chunk) -> None:
        """Count a turn if the client speaks after the server, then pass `chunk` on."""
        if chunk:
            if source is self.client and not self.client_spoke_last:
                self.route.turns.append(time.monotonic())
            self.client_spoke_last = source is self.client
        target = self.other(source)
        delay = self.proxy.delay_ns
        if delay == 0:
            target.deliver(chunk)
            return
        # Nothing reaches the other side before the handshake's round trip is over.
        now = time.monotonic_ns()
        self.proxy.timer.at(max(now, self.started_ns + 2 * delay) + delay, target, chunk)


class Proxy:
    """Every route of one process, the delay they share and their timer."""

    def __init__(self, routes: Sequence[Route], delay_ms: float) -> None:
        self.routes = {route.name: route for route in routes}
        self.delay_ns = round(delay_ms * 1_000_000)
        self.timer: Timer

    async def start(self, control: tuple[str, int]) -> dict[str, Any]:
        """Listen on every route and on the control address; what was bound."""
        loop = asyncio.get_running_loop()
        self.timer = Timer(loop)
        bound: dict[str, Any] = {"routes": {}}
        for route in self.routes.values():
            server = await loop.create_server(partial(self._accept, route), *route.listen)
            route.listen = server.sockets[0].getsockname()[:2]
            bound["routes"][route.name] = {"listen": address(route.listen),
                                           "upstream": address(route.upstream)}
        server = await asyncio.start_server(self._control, *control)
        bound["control"] = address(server.sockets[0].getsockname()[:2])
        return bound

    def _accept(self, route: Route) -> End:
        """The protocol of a connection accepted on `route`: the client's end of a link."""
        return Link(self, route).client

    def command(self, line: str) -> dict[str, Any]:
        if line in ("snapshot", "take"):
            answer: dict[str, Any] = {name: r.counts() for name, r in self.routes.items()}
        elif line == "reset":
            answer = {"reset": True}
        else:
            return {"error": f"unknown command {line!r}: snapshot, reset or take"}
        if line in ("reset", "take"):
            for route in self.routes.values():
                route.reset()
        return answer

    async def _control(self, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(json.dumps(self.command(line.decode().strip())).encode() + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()


def address(host_port: tuple[str, int]) -> str:
    return f"{host_port[0]}:{host_port[1]}"


def host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def parse_route(text: str) -> Route:
    """`[NAME=]LISTEN=UPSTREAM`; the name defaults to the upstream address."""
    parts = text.split("=")
    if len(parts) == 2:
        parts.insert(0, parts[1])
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"--route {text!r}: [NAME=]LISTEN=UPSTREAM")
    name, listen, upstream = parts
    return Route(name, host_port(listen), host_port(upstream))


def no_timer_slack() -> None:
    """Ask Linux to fire this thread's timers on time: a normal thread's are allowed 50 us
    late (so that wake-ups can be merged), which would add up to 100 us per round trip."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)  # 1 ns: the least there is
    except (OSError, AttributeError):
        pass


PR_SET_TIMERSLACK = 29


async def serve(routes: Sequence[Route], delay_ms: float, control: str) -> None:
    no_timer_slack()
    proxy = Proxy(routes, delay_ms)
    bound = await proxy.start(host_port(control))
    print(json.dumps(bound), flush=True)
    await asyncio.Event().wait()  # until killed


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--route", type=parse_route, action="append", required=True,
                        help="[NAME=]LISTEN=UPSTREAM, e.g. db=127.0.0.1:0=127.0.0.1:5432")
    parser.add_argument("--delay-ms", type=float, default=1.25,
                        help="each way (0: forward at once, only count)")
    parser.add_argument("--control", default="127.0.0.1:0", help="where the counts are read")
    args = parser.parse_args(argv)
    names = [route.name for route in args.route]
    if len(set(names)) != len(names):
        parser.error(f"route names must differ: {names}")
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.route, args.delay_ms, args.control))
    else:
        uvloop.run(serve(args.route, args.delay_ms, args.control))


# --- for the benchmarks ------------------------------------------------------------------


class DelayProxy:
    """This proxy in a subprocess, for a benchmark: `routes` maps a name to an upstream
    `HOST:PORT`; each gets a free port (`address(name)`). Counts are read over the control
    port (`snapshot`, `take`, `reset`)."""

    def __init__(self, routes: dict[str, str], delay_ms: float) -> None:
        self.upstreams, self.delay_ms = dict(routes), delay_ms
        self.addresses: dict[str, str] = {}
        self._proc: subprocess.Popen[str] | None = None
        self._control: socket.socket | None = None
        self._replies: Any = None

    def start(self) -> DelayProxy:
        argv = [sys.executable, str(Path(__file__).resolve()), "--delay-ms", str(self.delay_ms)]
        for name, upstream in self.upstreams.items():
            argv += ["--route", f"{name}=127.0.0.1:0={upstream}"]
        self._proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None  # stdout=PIPE
        line = self._proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError(f"delay proxy exited with {self._proc.wait()}")
        bound = json.loads(line)
        self.addresses = {name: r["listen"] for name, r in bound["routes"].items()}
        self._control = socket.create_connection(host_port(bound["control"]), timeout=30)
        self._replies = self._control.makefile("r")
        return self

    @property
    def pid(self) -> int:
        assert self._proc is not None, "not started"
        return self._proc.pid

    def address(self, name: str) -> str:
        return self.addresses[name]

    def _ask(self, command: str) -> dict[str, Any]:
        assert self._control is not None, "not started"
        self._control.sendall(command.encode() + b"\n")
        answer: dict[str, Any] = json.loads(self._replies.readline())
        return answer

    def snapshot(self) -> dict[str, dict[str, list[float]]]:
        return self._ask("snapshot")

    def take(self) -> dict[str, dict[str, list[float]]]:
        """The counts so far, which are cleared."""
        return self._ask("take")

    def reset(self) -> None:
        self._ask("reset")

    def stop(self) -> None:
        if self._control is not None:
            self._replies.close()
            self._control.close()
            self._control = None
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None

    def __enter__(self) -> DelayProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    main()

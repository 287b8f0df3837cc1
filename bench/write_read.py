"""Write then read, as a user sees it: clients that each add a task and at once read the page.

`loop(target, clients, seconds)` runs `clients` concurrent clients against one app for
`seconds`; each repeats: write a task with a new name, then as soon as the answer arrives
`GET /` from the same app, counting a page that lacks the name as a stale read. The client
is a small HTTP/1.1 one over asyncio streams (keep-alive when the server keeps the
connection, a new connection when it closes it), much cheaper per request than httpx, so
that it is not what limits the rate: `client_cpu` is its share of one CPU during the loop.
"""

from __future__ import annotations

import asyncio
import json
import resource
import secrets
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlencode

from bench.harness import Record, percentile

TIMEOUT = 120.0  # seconds for one request: only so that a stuck server cannot hang a run


@dataclass
class Response:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes


class Connection:
    """HTTP/1.1 to one server, reconnecting when the server closed the connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"",
                      content_type: str = "") -> Response:
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}"]
        if body or method == "POST":
            head += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
        message = ("\r\n".join(head) + "\r\n\r\n").encode() + body
        reused = self._writer is not None
        try:
            return await asyncio.wait_for(self._exchange(message), TIMEOUT)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.close()
            if not reused:
                raise
        # The server closed a kept-alive connection as the request left: once more, anew.
        return await asyncio.wait_for(self._exchange(message), TIMEOUT)

    async def _exchange(self, message: bytes) -> Response:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(message)
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = await self._chunked()
        else:
            body = await self._reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Response(status, headers, body)

    async def _chunked(self) -> bytes:
        assert self._reader is not None
        parts = []
        while size := int((await self._reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)
        await self._reader.readuntil(b"\r\n")  # no trailers are sent here
        return b"".join(parts)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


@dataclass(frozen=True)
class Target:
    """An app and its write: this app's `POST /api/tasks` (JSON, 201) or the tutorial's
    `POST /` (a form, 200 with the page)."""

    host: str
    port: int
    form: bool  # the tutorial's write
    notes: str = ""  # this app's: the new task's notes

    @property
    def expected(self) -> int:
        return 200 if self.form else 201

    async def write(self, connection: Connection, name: str) -> Response:
        if self.form:
            return await connection.request("POST", "/", urlencode({"name": name}).encode(),
                                            "application/x-www-form-urlencoded")
        task = {"name": name, "notes": self.notes} if self.notes else {"name": name}
        return await connection.request("POST", "/api/tasks", json.dumps(task).encode(),
                                        "application/json")


@dataclass
class PairLog:
    """What write-then-read pairs saw: each pair's seconds, its read's X-Cache, and the
    stale reads and errors (a line each)."""

    durations: list[float] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    x_cache: Counter[str] = field(default_factory=Counter)

    def read(self, seconds: float, name: str, status: int, x_cache: str | None, fresh: bool,
             via: str = "") -> None:
        """A pair done in `seconds`, its `GET /` answered `status`: stale unless `fresh`
        (the page shows the task `name` just written); `via` says where, in the lines."""
        self.durations.append(seconds)
        self.x_cache["-" if x_cache is None else x_cache] += 1
        if status != 200:
            self.errors.append(f"GET /{via}: {status}")
        elif not fresh:
            self.stale.append(f"GET /{via} lacks {name} (X-Cache {x_cache})")


async def client(target: Target, number: int, deadline: float, log: PairLog) -> None:
    """Write, then read at once, until `deadline`."""
    connection = Connection(target.host, target.port)
    i = 0
    try:
        while time.monotonic() < deadline:
            name = f"bench-{number}-{i}-{secrets.token_hex(4)}"
            i += 1
            started = time.monotonic()
            try:
                written = await target.write(connection, name)
                if written.status != target.expected:
                    log.errors.append(f"write: {written.status}")
                    continue
                page = await connection.request("GET", "/")
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as error:
                connection.close()
                log.errors.append(f"{error.__class__.__name__}: {error}")
                continue
            log.read(time.monotonic() - started, name, page.status, page.headers.get("x-cache"),
                     name.encode() in page.body)
    finally:
        connection.close()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_clients(target: Target, clients: int, seconds: float) -> Record:
    log = PairLog()
    cpu, started = cpu_seconds(), time.monotonic()
    await asyncio.gather(*(client(target, n, started + seconds, log) for n in range(clients)))
    elapsed = time.monotonic() - started  # until the last pair in flight ended
    pairs = len(log.durations)
    return {"clients": clients, "seconds": elapsed, "pairs": pairs,
            "pairs_per_s": pairs / elapsed, "client_cpu": (cpu_seconds() - cpu) / elapsed,
            "stale": len(log.stale), "stale_examples": log.stale[:5],
            "errors": len(log.errors), "error_examples": log.errors[:5],
            "x_cache": dict(log.x_cache),
            "pair_p50_ms": 1000 * statistics.median(log.durations) if pairs else float("nan"),
            "pair_p99_ms": 1000 * percentile(log.durations, 99)}


def loop(target: Target, clients: int, seconds: float) -> Record:
    """`clients` clients writing then reading for `seconds` (pairs in flight then finish)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(run_clients(target, clients, seconds))
    return uvloop.run(run_clients(target, clients, seconds))

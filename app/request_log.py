"""The access log: one line per HTTP request, as logfmt or (`LOG_FORMAT=json`) as JSON.

An ASGI middleware around the whole app: the same under any ASGI server, and it sees the
responses the view cache serves without reaching Quart. A line holds method, path, status,
duration, the view cache's `X-Cache` outcome and a request id (the client's `X-Request-ID`
when it is sane, else a new one; sent back in the response); never headers, cookies, bodies,
the query string or the client's address. The app's other records (`tasklist.*`, `app.*`)
go to the same handler in the same format, one line each, a traceback included
(docs/OPERATIONS.md, "The access log").
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import random
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from select import PIPE_BUF
from typing import Any

import orjson
from quart import Quart

from app.asgi import ASGIApp, HTTPMiddleware, Message, Receive, Send, wrap_asgi
from app.request_metrics import RequestMetrics
from app.settings import LogFormat

log = logging.getLogger("tasklist.request")
APP_LOGGERS = ("tasklist", "app")

# Echoed into the log and the response: no spaces, quotes or `=` that would let a client
# forge fields or lines.
SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
NEEDS_QUOTES = re.compile(r'[\s"=\\\x00-\x1f\x7f]')


class RequestLog(HTTPMiddleware):
    """ASGI middleware: log each HTTP request once it is over, whatever ended it (the
    response sent, the app raising, the client gone), count it in `metrics`, and tag it
    with `X-Request-ID`."""

    def __init__(self, app: ASGIApp, metrics: RequestMetrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    async def handle(self, scope: Message, receive: Receive, send: Send) -> None:
        exchange = Exchange(request_id_of(scope["headers"]), send)
        try:
            await self.app(scope, receive, exchange.send)
        finally:
            seconds = (exchange.finished or time.perf_counter()) - exchange.started
            self.metrics.observe(scope["method"], scope["path"], exchange.status, seconds)
            if log.isEnabledFor(logging.INFO):
                _log(scope, exchange, seconds)


@dataclass
class Exchange:
    """A request's answer as the log reports it, noted on its way to the client."""

    request_id: bytes
    downstream: Send
    started: float = field(default_factory=time.perf_counter)
    # 500 until a response starts: a server answers 500 when the app raises before that.
    status: int = 500
    cache: bytes = b"-"
    finished: float = 0.0

    async def send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.status = message["status"]
            headers = list(message.get("headers", ()))
            self.cache = next((value for name, value in headers if name == b"x-cache"), b"-")
            headers.append((b"x-request-id", self.request_id))
            message = {**message, "headers": headers}
        await self.downstream(message)
        if kind == "http.response.body" and not message.get("more_body", False):
            self.finished = time.perf_counter()  # the client has it; a cache store may follow


def _log(scope: Message, exchange: Exchange, seconds: float) -> None:
    """Write the request's line straight to the handler: a `LogRecord` per request (and the
    logging machinery that makes and routes it) would cost more than the line itself."""
    now = time.time()
    duration_ms = seconds * 1000
    HANDLER.write_line({
        "time": utc_time(now),
        "level": "info",
        "logger": log.name,
        "method": scope["method"],
        "path": scope["path"],
        "status": exchange.status,
        "duration_ms": round(duration_ms, 3),
        "cache": exchange.cache.decode("latin-1"),
        "request_id": exchange.request_id.decode("ascii"),
    })


def request_id_of(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The client's (or its proxy's) `X-Request-ID` if it is sane, else 128 random bits in
    hex, a uuid4's length. An id needs to be unique, not unguessable: `random` makes one
    without the system call that `uuid.uuid4()` and `secrets` make per id."""
    for name, value in headers:
        if name == b"x-request-id":
            if SANE_REQUEST_ID.fullmatch(value):
                return value
            break
    return b"%032x" % random.getrandbits(128)


def payload(record: logging.LogRecord, formatter: logging.Formatter) -> dict[str, Any]:
    """What a record's line says: time (UTC), level and logger, then its message, then the
    traceback if any."""
    data: dict[str, Any] = {
        "time": utc_time(record.created),
        "level": record.levelname.lower(),
        "logger": record.name,
        "message": record.getMessage(),
    }
    if record.exc_info:
        data["exc"] = formatter.formatException(record.exc_info)
    return data


def utc_time(timestamp: float) -> str:
    """ISO 8601 in UTC, to the millisecond."""
    return f"{utc_second(int(timestamp))}.{int(timestamp % 1 * 1000):03d}Z"


@lru_cache(maxsize=2)
def utc_second(timestamp: int) -> str:
    """ISO 8601, to the second: formatted once a second, not once a line."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp))


def logfmt_line(data: dict[str, Any]) -> str:
    """`time=... level=info logger=tasklist.request method=GET path=/ status=200 ...`;
    a value with spaces, quotes, `=` or control characters is quoted and escaped as JSON."""
    parts = []
    for key, value in data.items():
        if value.__class__ is str and NEEDS_QUOTES.search(value):
            value = orjson.dumps(value).decode()
        parts.append(f"{key}={value}")
    return " ".join(parts)


def json_line(data: dict[str, Any]) -> str:
    """One JSON object."""
    return orjson.dumps(data, default=str).decode()


class LineFormatter(logging.Formatter):
    """A record as one line in a format (`logfmt_line` or `json_line`)."""

    def __init__(self, line: Callable[[dict[str, Any]], str]) -> None:
        super().__init__()
        self.line = line

    def format(self, record: logging.LogRecord) -> str:
        return self.line(payload(record, self))


class StdoutHandler(logging.Handler):
    """One line per record on whatever `sys.stdout` is at the time (a test runner swaps
    it): the platform collects stdout as the app's log stream.

    A record is written at once. A request's line (`write_line`) waits up to `FLUSH_DELAY`
    for the lines of the requests that end after it, and goes out with them in one write:
    a write per line cost more than the rest of a cached request's own work. Writes hold
    whole lines, at most `PIPE_BUF` bytes each, so that the lines of processes that share
    the stream (a server's workers) never interleave mid-line. Pending lines go first
    whenever a record is written, and when the app stops serving (`flush_lines`); a
    process killed outright loses what it had pending."""

    formatter: LineFormatter

    def __init__(self) -> None:
        super().__init__()
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._flush_timer: asyncio.TimerHandle | None = None
        self._lines_lock = threading.RLock()  # a record may come from another thread

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.flush_lines()
            self._write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)

    def write_line(self, data: dict[str, Any]) -> None:
        """`data` as a line in the configured format, without a record (see above)."""
        try:
            line = self.formatter.line(data) + "\n"
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": "request log line", "args": ()}))
            return
        with self._lines_lock:
            self._pending.append(line)
            self._pending_bytes += _size(line)
            if self._pending_bytes >= PIPE_BUF:
                self.flush_lines()
            elif self._flush_timer is None:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:  # no loop to flush later: now
                    self.flush_lines()
                else:
                    self._flush_timer = loop.call_later(FLUSH_DELAY, self.flush_lines)

    def flush_lines(self) -> None:
        """Write the pending request lines now."""
        with self._lines_lock:
            if self._flush_timer is not None:
                self._flush_timer.cancel()
                self._flush_timer = None
            lines, self._pending, self._pending_bytes = self._pending, [], 0
            chunk: list[str] = []
            size = 0
            try:
                for line in lines:
                    if chunk and size + _size(line) > PIPE_BUF:
                        self._write("".join(chunk))
                        chunk, size = [], 0
                    chunk.append(line)
                    size += _size(line)
                if chunk:
                    self._write("".join(chunk))
            except Exception:
                self.handleError(logging.makeLogRecord({"msg": "request log lines", "args": ()}))

    def _write(self, text: str) -> None:
        stream = sys.stdout
        stream.write(text)
        stream.flush()


def _size(line: str) -> int:
    """The bytes `line` takes in UTF-8 (what stdout writes)."""
    return len(line) if line.isascii() else len(line.encode())


FLUSH_DELAY = 0.05  # seconds a request's line may wait for others to share its write
HANDLER = StdoutHandler()
atexit.register(HANDLER.flush_lines)
LINES: dict[LogFormat, Callable[[dict[str, Any]], str]] = {
    "plain": logfmt_line,
    "json": json_line,
}


def configure_logging(log_format: LogFormat) -> None:
    """Send the app's loggers to stdout in `log_format`. Idempotent: one handler per
    process, whose format is the last one asked for. The request log does not propagate
    (it is the access log, written once); the app's other loggers still do, so a server's
    or a test runner's handlers see them too. A level set beforehand is kept."""
    HANDLER.setFormatter(LineFormatter(LINES[log_format]))
    for name in APP_LOGGERS:
        logger = logging.getLogger(name)
        if HANDLER not in logger.handlers:
            logger.addHandler(HANDLER)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
    logging.getLogger("tasklist").propagate = False


def init_app(app: Quart, metrics: RequestMetrics) -> None:
    """Log and count every request; call after the layers whose responses (and headers) it
    should see."""
    wrap_asgi(app, lambda inner: RequestLog(inner, metrics))
    app.after_serving(_flush_lines)


async def _flush_lines() -> None:
    HANDLER.flush_lines()

"""Reference apps for bench/http_benchmark.py: what serving a 5 KB page costs without the app.

    .venv/bin/hypercorn --workers 2 --bind 127.0.0.1:PORT bench.baselines:quart_app

- `quart_app`: a bare Quart app whose `GET /` returns `PAGE`. Its rate is "Q", the unit the
  benchmark reports every app figure in, so that a result says "1.4 Q" rather than a rate
  that only means something on this machine.
- `asgi_app`: a bare ASGI callable sending the same bytes (what Quart itself costs).
- `hit_floor_app`: a bare ASGI callable that fetches a small token and the page from
  memcached in one `multi_get` per request, as the app's cache hit does at least: the least
  a cache hit can cost in this stack. It stores both at startup in the memcached named by
  `BENCH_MEMCACHED` (`host:port`), and again whenever they are missing (the benchmark flushes
  memcached for each table size while this server stays up).

The ASGI apps answer every path the same way (the benchmark waits on `/` for them).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiomcache
from quart import Quart, Response

PAGE_BYTES = 5_120
TOKEN_KEY, PAGE_KEY = b"bench:token", b"bench:page"
POOL_SIZE = 8  # the app's CACHE_POOL_SIZE default


def _page() -> bytes:
    head = b"<!doctype html>\n<html><head><title>Baseline</title></head><body>\n"
    tail = b"</body></html>\n"
    row = b"<p>A constant line of text, the same on every request.</p>\n"
    body = row * ((PAGE_BYTES - len(head) - len(tail)) // len(row))
    padding = b" " * (PAGE_BYTES - len(head) - len(body) - len(tail))
    return head + body + padding + tail


PAGE = _page()
assert len(PAGE) == PAGE_BYTES

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HEADERS = [
    (b"content-type", b"text/html; charset=utf-8"),
    (b"content-length", str(PAGE_BYTES).encode()),
]

quart_app = Quart(__name__)


@quart_app.get("/")
async def index() -> Response:
    return Response(PAGE, content_type="text/html; charset=utf-8")


async def _send_page(send: Send, page: bytes) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": page})


async def _lifespan(receive: Receive, send: Send, startup: Callable[[], Awaitable[None]]) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await startup()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _nothing() -> None:
    return None


async def asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send, _nothing)
    elif scope["type"] == "http":
        await _send_page(send, PAGE)


class _HitFloor:
    """One aiomcache client per worker process, made at lifespan startup."""

    def __init__(self) -> None:
        self.client: aiomcache.Client | None = None

    async def startup(self) -> None:
        host, _, port = os.environ["BENCH_MEMCACHED"].rpartition(":")
        self.client = aiomcache.Client(host, int(port), pool_size=POOL_SIZE)
        await self.store()

    async def store(self) -> None:
        assert self.client is not None
        await self.client.set(TOKEN_KEY, b"1")
        await self.client.set(PAGE_KEY, PAGE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send, self.startup)
        elif scope["type"] == "http":
            assert self.client is not None
            _token, page = await self.client.multi_get(TOKEN_KEY, PAGE_KEY)
            if page is None:  # flushed: store them again (a miss, once per flush)
                await self.store()
                page = PAGE
            await _send_page(send, page)


hit_floor_app = _HitFloor()

"""One HTTP request straight into an ASGI app, as a server hands it over: no socket, no test
client (which recomputes Content-Length from the body it got), and, like hypercorn, the
client reported gone as soon as the whole body is sent."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# An ASGI app either way it is typed: Quart's `asgi_app` with hypercorn's TypedDicts, the app's
# middlewares (RequestLog, BodyLimit, ...) with plain dicts. A TypedDict is not a dict[str, Any]
# nor the other way round, so neither type admits the other's apps.
DictASGIApp = Callable[[Message, Receive, Send], Awaitable[None]]
ASGIApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]] | DictASGIApp


@dataclass
class Sent:
    """What the app sent: its status, headers (by lowercase name) and body."""

    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)


async def asgi_request(
    app: ASGIApp,
    method: str,
    target: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
) -> Sent:
    path, _, query = target.partition("?")
    headers = list(headers or [])
    if body and not any(name in (b"content-length", b"transfer-encoding") for name, _ in headers):
        headers.append((b"content-length", str(len(body)).encode()))  # as HTTP/1.1 says it
    scope: Message = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query.encode(),
        "root_path": "", "headers": [(b"host", b"127.0.0.1"), *headers],
        "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80), "extensions": {},
    }
    sent = Sent()
    requested, finished = False, asyncio.Event()

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": body, "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            sent.status = message["status"]
            sent.headers.update(message.get("headers", []))
        else:
            sent.body.extend(message.get("body", b""))
            if not message.get("more_body", False):
                finished.set()

    call: Callable[..., Awaitable[None]] = app  # either kind takes these three
    await call(scope, receive, send)
    return sent

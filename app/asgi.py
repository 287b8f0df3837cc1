"""ASGI plumbing shared by the app's middleware: the types, adding headers to a response on
its way out, and installing a middleware around Quart.

The middleware here read and build messages as plain dicts, which is what ASGI servers
pass; Quart types its handler with hypercorn's TypedDicts, the same dicts described key by
key, so `wrap_asgi` converts between the two in one place.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, cast

from quart import Quart

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Message, Receive, Send], Awaitable[None]]
RawHeaders = list[tuple[bytes, bytes]]


class HeaderLookup(Protocol):
    """Request headers by lower-case name: werkzeug's `Headers` (in a view) or a plain
    mapping (in a middleware, before Quart has parsed the request)."""

    def get(self, key: str, /) -> str | None: ...


class HTTPMiddleware:
    """An ASGI middleware for HTTP requests: other scopes (lifespan, websockets) go to the
    wrapped app untouched, HTTP ones to `handle`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def handle(self, scope: Message, receive: Receive, send: Send) -> None:
        raise NotImplementedError


def wrap_asgi(app: Quart, middleware: Callable[[ASGIApp], ASGIApp]) -> None:
    """Put `middleware` around the app's ASGI handler (Quart's way to add ASGI middleware:
    wrap `app.asgi_app`, so the app object itself stays a Quart app). Each call wraps the
    previous ones: the last installed is the outermost."""
    inner = cast(ASGIApp, app.asgi_app)
    app.asgi_app = cast(Any, middleware(inner))  # type: ignore[method-assign]  # Quart's documented hook


def with_response_headers(send: Send, change: Callable[[RawHeaders], RawHeaders]) -> Send:
    """`send`, passing the headers of the response start through `change` first."""

    async def send_changed(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": change(list(message.get("headers", ())))}
        await send(message)

    return send_changed

"""The request body limit (`MAX_CONTENT_LENGTH`) on every route, whether its view reads a
body or not.

Quart checks the limit only when a view reads the body, and buffers a chunked body whole
before it does: a view that needs none (a delete) acted on a request it should have
refused, and a client could make the process hold any amount of data. So every request's
body is read before its view runs (`read_body`), and `BodyLimit` stops passing a body on
once it is over the limit.
"""

from __future__ import annotations

from functools import partial

from quart import Quart, request
from werkzeug.exceptions import RequestEntityTooLarge

from app.asgi import ASGIApp, HeaderLookup, HTTPMiddleware, Message, Receive, Send, wrap_asgi


class BodyLimit(HTTPMiddleware):
    """ASGI middleware: pass on a request body up to the first chunk that takes it over
    `limit` bytes, then end it there. Quart then holds a body over its limit, which it
    refuses (413) as soon as anything reads it; the rest is read and dropped, so that the
    client, still sending, gets to read that answer."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        super().__init__(app)
        self.limit = limit

    async def handle(self, scope: Message, receive: Receive, send: Send) -> None:
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            while message["type"] == "http.request" and received > self.limit:
                message = await receive()  # past the limit: drop the rest
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    return {**message, "more_body": False}
            return message

        await self.app(scope, limited_receive, send)


def may_have_body(http_version: str, headers: HeaderLookup) -> bool:
    """False when the request has no body: an HTTP/1 request says so by sending neither
    `Content-Length` nor `Transfer-Encoding` (RFC 9112, 6.3), or a length of 0."""
    length = headers.get("content-length")
    if headers.get("transfer-encoding") is not None:
        return True
    if length is None:
        return not http_version.startswith("1")
    return length.strip() != "0"


def init_app(app: Quart) -> None:
    """Refuse a body over `MAX_CONTENT_LENGTH` with 413 on every route, before any view."""
    limit = app.config["MAX_CONTENT_LENGTH"]
    too_large = f"The request body is larger than {limit:,} bytes, the most this server takes."

    @app.before_request
    async def read_body() -> None:
        if not may_have_body(request.http_version, request.headers):
            return
        try:
            await request.get_data(cache=True)
        except RequestEntityTooLarge:
            raise RequestEntityTooLarge(too_large) from None

    wrap_asgi(app, partial(BodyLimit, limit=limit))

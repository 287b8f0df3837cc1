"""Responses the app renders for the view cache: passed on to the client, and captured.

`ResponseRecorder` is the `send` a miss (or a bypass) runs the app with: it adds the
cache's headers to the response start and hands the whole response to `store` once the
client has it, if it may be stored (`storable`, and `http.shareable`). `BackgroundClient`
is the client end of a render nobody waits for: a background refresh.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from app.asgi import Message, RawHeaders, Send

from .http import merge_headers, shareable


@dataclass
class CapturedResponse:
    status: int = 0
    headers: RawHeaders = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)


@dataclass
class ResponseRecorder:
    """A `send` that passes a response on, with the cache's headers, and stores it once
    complete if it is shareable. The store runs after the client has the whole body."""

    send: Send
    store: Callable[[CapturedResponse], Awaitable[None]]
    cache_headers: RawHeaders
    etag: str
    storable: bool
    captured: CapturedResponse = field(default_factory=CapturedResponse)
    recording: bool = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            await self.send(self._start(message))
            return
        await self.send(message)
        if message["type"] == "http.response.body" and self.recording:
            self.captured.body += message.get("body", b"")
            if not message.get("more_body", False):
                self.recording = False  # store once
                # Shielded: the server reports the client gone once it has the body, and
                # Quart then cancels the request, which would cut the store off midway
                # (and close the cache connection it was using).
                await asyncio.shield(self.store(self.captured))

    def _start(self, message: Message) -> Message:
        """The response start as sent: the cache's headers added, and the ETag if stored."""
        captured = self.captured
        captured.status = message["status"]
        captured.headers = list(message.get("headers", []))
        self.recording = self.storable and shareable(captured.status, captured.headers)
        captured.headers = merge_headers(captured.headers, self.cache_headers)
        if not self.recording:
            return {**message, "headers": captured.headers}
        return {**message, "headers": [*captured.headers, (b"etag", self.etag.encode())]}


class BackgroundClient:
    """The client end of a request the app sends itself: an empty body, then, once the
    response is complete, a disconnect."""

    def __init__(self) -> None:
        self.finished = asyncio.Event()
        self.requested = False

    async def receive(self) -> Message:
        if not self.requested:
            self.requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self.finished.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            self.finished.set()

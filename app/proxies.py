"""The client's address behind a reverse proxy: `X-Forwarded-For`, believed only from the
proxies named by `FORWARDED_ALLOW_IPS`.

The header is read from the right: on a connection from a trusted proxy, the entries that
are trusted proxies too are hops, and the first one that is not is the client. A request
from anyone else keeps its connection's address, and so does one whose header holds
something that is not an address where the client should be. The middleware replaces the
ASGI scope's `client`, so everything inside sees the same address; it is installed only
when `FORWARDED_ALLOW_IPS` names a proxy (docs/OPERATIONS.md, "The client's address").
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address

from quart import Quart

from app import asgi
from app.settings import Networks

HEADER = b"x-forwarded-for"


def forwarded_client(peer: str, forwarded: list[bytes], trusted: Networks) -> str | None:
    """The client's address when the connection from `peer` came through trusted proxies
    with `forwarded` (the values of every `X-Forwarded-For` line, in order); None when the
    peer is not trusted, or the header names no client (missing, or malformed where the
    client's address should be)."""
    if not forwarded or not _trusted(_address(peer), trusted):
        return None
    entries = b",".join(forwarded).decode("latin-1").split(",")
    hops = [_address(entry.strip()) for entry in entries]
    for hop in reversed(hops):
        if hop is None:
            return None  # not an address: the header is not to be believed
        if not _trusted(hop, trusted):
            return str(hop)
    first = hops[0]
    return str(first) if first is not None else None  # proxies all the way: the first


def _address(text: str) -> IPv4Address | IPv6Address | None:
    try:
        return ip_address(text)
    except ValueError:
        return None


def _trusted(address: IPv4Address | IPv6Address | None, trusted: Networks) -> bool:
    if address is None:
        return False
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:10.0.0.1 from a dual-stack socket
    return any(address in network for network in trusted)


class TrustedProxies(asgi.HTTPMiddleware):
    """Set the scope's `client` to the address the trusted proxy saw (see the module)."""

    def __init__(self, app: asgi.ASGIApp, trusted: Networks) -> None:
        super().__init__(app)
        self.trusted = trusted

    async def handle(self, scope: asgi.Message, receive: asgi.Receive, send: asgi.Send) -> None:
        peer = scope.get("client")
        if peer:
            forwarded = [value for name, value in scope["headers"] if name == HEADER]
            client = forwarded_client(peer[0], forwarded, self.trusted)
            if client is not None:
                scope = {**scope, "client": (client, 0)}  # its port is not forwarded
        await self.app(scope, receive, send)


def init_app(app: Quart, trusted: Networks) -> None:
    """Install the middleware around everything installed so far, if any proxy is trusted."""
    if trusted:
        asgi.wrap_asgi(app, lambda inner: TrustedProxies(inner, trusted))

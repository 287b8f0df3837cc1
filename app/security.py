"""Cross-origin protection without tokens, and the security headers on every response.

The cross-origin check follows Go's `net/http.CrossOriginProtection`: browsers say where a
request comes from (`Sec-Fetch-Site`, else `Origin`), so an unsafe request from another site
is refused without a per-session token in the page, and pages stay cacheable. A client that
sends neither header is not a browser (curl, a JSON client) and is allowed.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from quart import Quart, Response, request

from app import asgi
from app.errors import error_page

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
CROSS_ORIGIN = "Cross-origin requests are not allowed."

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    )
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
)


def is_cross_origin(method: str, headers: asgi.HeaderLookup, host: str) -> bool:
    """True when a browser sent an unsafe request from another origin (or a hidden one)."""
    if method in SAFE_METHODS:
        return False
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None:
        return False
    return origin == "null" or urlsplit(origin).netloc.lower() != host.lower()


class SecurityHeaders(asgi.HTTPMiddleware):
    """Add the security headers to every HTTP response that lacks them.

    It wraps the whole ASGI app, so responses that never reach a Quart view (served from a
    cache in front of it, or static files) get them too.
    """

    async def handle(self, scope: asgi.Message, receive: asgi.Receive, send: asgi.Send) -> None:
        await self.app(scope, receive, asgi.with_response_headers(send, _add_security_headers))


def _add_security_headers(headers: asgi.RawHeaders) -> asgi.RawHeaders:
    present = {name.lower() for name, _ in headers}
    return headers + [(n, v) for n, v in SECURITY_HEADERS if n not in present]


def init_app(app: Quart) -> None:
    @app.before_request
    async def refuse_cross_origin() -> Response | None:
        if is_cross_origin(request.method, request.headers, request.host):
            return await error_page(403, CROSS_ORIGIN)
        return None

    asgi.wrap_asgi(app, SecurityHeaders)

"""The view cache's HTTP rules, as pure functions of headers.

Which requests the cache may answer and which responses it may share; `Accept-Encoding`
(gzip or not); weak ETags made from the entry's key and tokens, and `If-None-Match`
matched against them (``*`` never: a 404 must not become a 304); the 304 itself; and the
`X-Cache` and `Vary` headers of every response of a cached route, merged into a `Vary`
the view set rather than added beside it. Request headers come as a lower-case mapping,
response headers as ASGI's raw pairs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from werkzeug.http import parse_etags, parse_set_header, unquote_etag

from app.asgi import RawHeaders, Send
from app.cache.keys import digest


def has_body(headers: Mapping[str, str]) -> bool:
    """A GET or HEAD that sends a body: meaningless, but the app must see it to refuse one
    over its size limit, so it is never answered from the cache."""
    return "transfer-encoding" in headers or headers.get("content-length", "0") != "0"


def shareable(status: int, headers: RawHeaders) -> bool:
    """Whether a response may be stored for everyone: a 200 with no `Set-Cookie`, not
    `private`/`no-store`, and no `Vary: *`."""
    if status != 200:
        return False
    for name, value in headers:
        name = name.lower()
        if name == b"set-cookie":
            return False
        if name == b"cache-control" and (b"private" in value or b"no-store" in value):
            return False
        if name == b"vary" and value.strip() == b"*":
            return False
    return True


def accepts_gzip(header: str | None) -> bool:
    """True if an `Accept-Encoding` header takes gzip (and does not refuse it with q=0)."""
    if not header or "gzip" not in header:
        return False
    for coding in header.split(","):
        name, _, params = coding.partition(";")
        if name.strip().lower() in ("gzip", "x-gzip"):
            quality = params.strip().removeprefix("q=").strip() if params else "1"
            try:
                return float(quality) > 0
            except ValueError:
                return False
    return False


def make_etag(key: str, tokens: list[Any], gzipped: bool) -> str:
    """Weak ETag of the representation under `key` and these tokens; a client that takes
    gzip gets another one (the bytes differ)."""
    tag = digest(key + ":" + ":".join(map(str, tokens)))
    return f'W/"{tag}-gz"' if gzipped else f'W/"{tag}"'


def etag_matches(header: str | None, etag: str) -> bool:
    """Weak comparison against a list of tags. ``*`` is not answered here: whether any
    representation exists is for the view to say (a 404 must never become a 304)."""
    if not header:
        return False
    tags = parse_etags(header)
    return not tags.star_tag and tags.contains_weak(unquote_etag(etag)[0])


def cache_headers(vary: tuple[str, ...], state: str) -> RawHeaders:
    """`X-Cache`, and a `Vary` naming what picks the answer: the view's variant headers
    (`vary`), the cookie (a session cookie bypasses the cache) and Accept-Encoding (gzip or
    not). The same on 200, 304 and bypass."""
    names = ", ".join([*vary, "Cookie", "Accept-Encoding"])
    return [(b"x-cache", state.encode()), (b"vary", names.encode())]


def merge_headers(headers: RawHeaders, extra: RawHeaders) -> RawHeaders:
    """`headers` plus `extra`; a `Vary` already present gets the names it lacks (compared
    without case, as werkzeug's `Response.vary` does), not a second `Vary`."""
    merged = list(headers)
    for name, value in extra:
        at = next((i for i, (n, _) in enumerate(merged) if n.lower() == name == b"vary"), None)
        if at is None:
            merged.append((name, value))
            continue
        vary = parse_set_header(merged[at][1].decode("latin-1"))
        for header in parse_set_header(value.decode("latin-1")):
            vary.add(header)
        merged[at] = (b"vary", vary.to_header().encode("latin-1"))
    return merged


async def send_not_modified(send: Send, vary: tuple[str, ...], etag: str) -> None:
    """The 304 for a request whose `If-None-Match` holds the current `etag`."""
    headers = [*cache_headers(vary, "hit"), (b"etag", etag.encode())]
    await send({"type": "http.response.start", "status": 304, "headers": headers})
    await send({"type": "http.response.body", "body": b"", "more_body": False})

"""Whole-view caching, served in front of the framework (as Django serves its page cache
from middleware).

A view opts in with `@cached(...)`, naming the generation namespaces its response depends
on. `ViewCacheMiddleware` wraps the ASGI app. For a GET or HEAD of a cached route it reads
those generations and the stored entry in one `get_many`; the entry sits under a stable
key (path, sorted query, variant) with the generations it was built from stored inside it
(Rails' cache versioning), so a write anywhere in a namespace makes it a miss. The key
also names the release (the code that renders the views), so a deploy never serves pages
rendered by the code it replaced. A hit sends the stored bytes without touching Quart;
`If-None-Match` with the current ETag (derived from the generations) gets a 304 without
touching the database. An entry older than the
view's timeout (but with current tokens, so its data is as fresh as the database) is sent
as `stale` while one background render replaces it; it is kept for twice the timeout.

On a miss the request runs through the app and the response is stored only if it is
shareable: status 200, no `Set-Cookie`, not `private`/`no-store`, no `Vary: *`, and the
request carried no session cookie (a request with a session may hold a pending flash: it
bypasses the cache entirely). The response streams to the client as it is produced and is
stored once complete, so a miss costs the client nothing extra.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

from quart import Quart
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, MapAdapter, Rule

from .keys import digest
from .service import CacheService

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

VIEW_CACHE_ATTRIBUTE = "view_cache"
# Never replayed from the cache: per-connection or per-user, or recomputed on the way out.
UNSTORED_HEADERS = {b"set-cookie", b"date", b"server", b"etag", b"x-cache"}


@dataclass(frozen=True)
class ViewCacheSpec:
    timeout: int
    namespaces: tuple[str, ...]
    vary: tuple[str, ...]


def cached(
    timeout: int = 300, *, depends_on: Sequence[str] = (), vary: Sequence[str] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a GET view as cacheable for `timeout` seconds.

    `depends_on` names generation namespaces and may use the view's arguments
    (`"task-{task_id}"`). `vary` names the request headers that select a variant of the
    response (they also go into the response's `Vary`).
    """
    spec = ViewCacheSpec(timeout, tuple(depends_on), tuple(vary))

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        setattr(view, VIEW_CACHE_ATTRIBUTE, spec)
        return view

    return decorator


@dataclass
class CapturedResponse:
    status: int = 0
    headers: Headers = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)


class ViewCacheMiddleware:
    def __init__(
        self,
        app: Quart,
        asgi_app: ASGIApp,
        *,
        get_service: Callable[[], CacheService | None],
        variant: Callable[[Mapping[str, str]], str],
        has_session: Callable[[Mapping[str, str]], bool],
        release: str,
    ) -> None:
        self.app = app
        self.asgi_app = asgi_app
        self.get_service = get_service
        self.variant = variant
        self.has_session = has_session
        self.release = release
        self._routes: MapAdapter | None = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD"):
            return await self.asgi_app(scope, receive, send)
        route = self._match(scope["path"])
        service = self.get_service()
        if route is None or service is None:
            return await self.asgi_app(scope, receive, send)
        spec, view_args = route
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if self.has_session(headers):
            return await self.asgi_app(
                scope, receive, _adding(send, _cache_headers(spec, "bypass"))
            )
        await self._serve(service, spec, view_args, scope, headers, receive, send)

    async def _serve(
        self,
        service: CacheService,
        spec: ViewCacheSpec,
        view_args: dict[str, Any],
        scope: dict,
        headers: Mapping[str, str],
        receive: Callable,
        send: Callable,
    ) -> None:
        variant = self.variant(headers) if spec.vary else "-"
        key = service.keys.key("view", self.release, scope["path"], _sorted_query(scope), variant)
        namespaces = [ns.format(**view_args) for ns in spec.namespaces]
        gen_keys = [service.generations.key(ns) for ns in namespaces]
        if_none_match = headers.get("if-none-match")
        # A revalidation needs only the tokens: don't fetch (and decode) the stored page.
        wanted = gen_keys if if_none_match else [*gen_keys, key]
        found = await service.client.get_many(wanted)
        if all(gen_key in found for gen_key in gen_keys):
            tokens = [found[gen_key].value for gen_key in gen_keys]
        else:
            current = await service.generations.current(namespaces)
            tokens = [current[ns] for ns in namespaces]
        etag = f'W/"{digest(key + ":" + ":".join(map(str, tokens)))}"'

        if _etag_matches(if_none_match, etag):
            return await _send_not_modified(send, spec, etag)
        entry = found.get(key) if not if_none_match else await service.client.get(key)
        if entry is not None and isinstance(entry.value, dict) and entry.value.get("g") == tokens:
            state = "hit"
            if entry.is_stale(service.clock()):
                state = "stale"
                self._refresh(service, key, spec, tokens, scope)
            return await _send_stored(send, scope, spec, etag, entry.value, state)

        record = self._recording(send, service, key, spec, tokens, etag, scope["method"] == "GET")
        await self.asgi_app(scope, receive, record)

    def _recording(
        self,
        send: Callable,
        service: CacheService,
        key: str,
        spec: ViewCacheSpec,
        tokens: list[Any],
        etag: str,
        storable: bool,
    ) -> Callable:
        """A `send` that passes the response on (with the cache's headers) and stores it
        once complete, if it is shareable. Storing happens after the client has it."""
        captured = CapturedResponse()
        shareable = False

        async def send_and_record(message: dict) -> None:
            nonlocal shareable
            if message["type"] == "http.response.start":
                captured.status = message["status"]
                captured.headers = list(message.get("headers", []))
                shareable = storable and _shareable(captured)
                extra = _cache_headers(spec, "miss")
                if shareable:
                    extra.append((b"etag", etag.encode()))
                message = {**message, "headers": _merge(captured.headers, extra)}
                await send(message)
                return
            await send(message)
            if message["type"] == "http.response.body" and shareable:
                captured.body += message.get("body", b"")
                if not message.get("more_body", False):
                    shareable = False  # store once
                    await self._store(service, key, spec, tokens, captured)

        return send_and_record

    async def _store(
        self,
        service: CacheService,
        key: str,
        spec: ViewCacheSpec,
        tokens: list[Any],
        captured: CapturedResponse,
    ) -> None:
        try:
            body = captured.body.decode()
        except UnicodeDecodeError:
            return
        stored_headers = [
            [name.decode("latin-1"), value.decode("latin-1")]
            for name, value in captured.headers
            if name.lower() not in UNSTORED_HEADERS
        ]
        value = {"g": tokens, "h": stored_headers, "b": body}
        await service.client.set(key, value, spec.timeout * 2, soft_ttl=spec.timeout)

    def _refresh(
        self,
        service: CacheService,
        key: str,
        spec: ViewCacheSpec,
        tokens: list[Any],
        scope: dict,
    ) -> None:
        """Render the view again in the background (no cookies, as for any shared entry)
        and store it; the current tokens still hold, so the data is just as fresh."""
        headers = [(n, v) for n, v in scope["headers"] if n not in (b"cookie", b"if-none-match")]
        request = {**scope, "method": "GET", "headers": headers}

        async def render() -> None:
            finished = asyncio.Event()
            requested = False

            async def receive() -> dict:
                nonlocal requested
                if not requested:
                    requested = True
                    return {"type": "http.request", "body": b"", "more_body": False}
                await finished.wait()
                return {"type": "http.disconnect"}

            async def discard(message: dict) -> None:
                if message["type"] == "http.response.body" and not message.get("more_body"):
                    finished.set()

            record = self._recording(discard, service, key, spec, tokens, "", True)
            await self.asgi_app(request, receive, record)

        service.refresh_in_background(key, render)

    def _match(self, path: str) -> tuple[ViewCacheSpec, dict[str, Any]] | None:
        if self._routes is None:
            self._routes = self._cached_routes()
        try:
            endpoint, view_args = self._routes.match(path, method="GET")
        except HTTPException:
            return None
        return endpoint, view_args

    def _cached_routes(self) -> MapAdapter:
        """A small map holding only the cached GET routes; the 'endpoint' is the spec."""
        rules = []
        for rule in self.app.url_map.iter_rules():
            view = self.app.view_functions.get(rule.endpoint)
            spec = getattr(view, VIEW_CACHE_ATTRIBUTE, None)
            if spec is not None and "GET" in (rule.methods or ()):
                rules.append(Rule(rule.rule, endpoint=spec, methods=["GET"]))
        return Map(rules, converters=self.app.url_map.converters).bind("cache.invalid")


def _sorted_query(scope: dict) -> str:
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return urlencode(sorted(pairs))


def _etag_matches(header: str | None, etag: str) -> bool:
    """Weak comparison against a list of tags. ``*`` is not answered here: whether any
    representation exists is for the view to say (a 404 must never become a 304)."""
    if not header:
        return False
    weak = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == weak for tag in header.split(","))


def _shareable(captured: CapturedResponse) -> bool:
    if captured.status != 200:
        return False
    for name, value in captured.headers:
        name = name.lower()
        if name == b"set-cookie":
            return False
        if name == b"cache-control" and (b"private" in value or b"no-store" in value):
            return False
        if name == b"vary" and value.strip() == b"*":
            return False
    return True


def _cache_headers(spec: ViewCacheSpec, state: str) -> Headers:
    """`X-Cache`, and a `Vary` naming what picks the answer: the view's variant headers and
    the cookie (a session cookie bypasses the cache). The same on 200, 304 and bypass."""
    vary = ", ".join([*spec.vary, "Cookie"])
    return [(b"x-cache", state.encode()), (b"vary", vary.encode())]


def _merge(headers: Headers, extra: Headers) -> Headers:
    """`headers` plus `extra`; a `Vary` already present is extended, not duplicated."""
    merged = list(headers)
    for name, value in extra:
        if name == b"vary":
            existing = next((i for i, (n, _) in enumerate(merged) if n.lower() == b"vary"), None)
            if existing is not None:
                have = [v.strip().lower() for v in merged[existing][1].split(b",")]
                missing = [v for v in value.split(b", ") if v.lower() not in have]
                if missing:
                    merged[existing] = (b"vary", b", ".join([merged[existing][1], *missing]))
                continue
        merged.append((name, value))
    return merged


def _adding(send: Callable, extra: Headers) -> Callable:
    async def send_with_headers(message: dict) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": _merge(list(message.get("headers", [])), extra)}
        await send(message)

    return send_with_headers


async def _send_not_modified(send: Callable, spec: ViewCacheSpec, etag: str) -> None:
    headers = [*_cache_headers(spec, "hit"), (b"etag", etag.encode())]
    await send({"type": "http.response.start", "status": 304, "headers": headers})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _send_stored(
    send: Callable,
    scope: dict,
    spec: ViewCacheSpec,
    etag: str,
    stored: dict[str, Any],
    state: str,
) -> None:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in stored["h"]]
    headers = _merge(headers, [*_cache_headers(spec, state), (b"etag", etag.encode())])
    body = b"" if scope["method"] == "HEAD" else stored["b"].encode()
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})

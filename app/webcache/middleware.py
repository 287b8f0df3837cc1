"""`ViewCacheMiddleware`: `@cached` views served in front of Quart, hits without it.

A GET or HEAD of a cached route reads the entry's generation tokens (and the entry, unless
this process keeps it in `RecentResponses` or the request revalidates) in one `get_many`;
an entry built under other tokens is a miss, as is one from another release (the key names
it). Everything one request needs once its tokens are known travels in an `Exchange`.
A miss streams to the client and is stored after it (`ResponseRecorder`), rendered once per
entry and tokens across requests and processes; an entry past its timeout is sent `stale`
while one background render replaces it. Requests with a session cookie, credentials or a
body bypass the cache. docs/CACHE.md, "Whole-view caching", gives the reasons.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlencode

from quart import Quart
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, MapAdapter, Rule

from app.asgi import (
    ASGIApp,
    HeaderLookup,
    HTTPMiddleware,
    Message,
    Receive,
    Send,
    with_response_headers,
)
from app.cache.entry import Entry
from app.cache.keys import KeyKinds
from app.cache.service import CacheService

from .declaration import VIEW_CACHE_ATTRIBUTE, ViewCacheSpec
from .http import (
    accepts_gzip,
    cache_headers,
    etag_matches,
    has_body,
    make_etag,
    merge_headers,
    send_not_modified,
)
from .recent import RecentResponses, StoredResponse
from .recorder import BackgroundClient, CapturedResponse, ResponseRecorder

ViewMatch = tuple[ViewCacheSpec, dict[str, Any]]

# Never replayed from the cache: per-connection or per-user, or recomputed on the way out.
UNSTORED_HEADERS = {b"set-cookie", b"date", b"server", b"etag", b"x-cache", b"content-length"}
MEMO_SIZE = 4096  # paths and keys memoized before the memo starts over (paths are user input)


@dataclass(slots=True)
class Exchange:
    """One request of a cached route once its tokens are read: what serving it, recording
    its miss or refreshing its entry needs."""

    service: CacheService
    spec: ViewCacheSpec
    key: str  # the entry's
    tokens: list[Any]  # the generations the response must be built under
    etag: str
    gzip_ok: bool
    scope: Message
    receive: Receive
    send: Send


class ViewCacheMiddleware(HTTPMiddleware):
    def __init__(
        self,
        app: Quart,
        asgi_app: ASGIApp,
        *,
        get_service: Callable[[], CacheService | None],
        variant: Callable[[HeaderLookup], str],
        has_session: Callable[[HeaderLookup], bool],
        release: str,
        recent_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        super().__init__(asgi_app)
        self.quart = app  # whose url_map says which routes are cached
        self.get_service = get_service
        self.variant = variant
        self.has_session = has_session
        self.release = release
        self.recent = RecentResponses(recent_bytes)
        self._routes: MapAdapter | None = None
        self._matches: dict[str, ViewMatch | None] = {}
        self._keys: dict[tuple[str, bytes, str], tuple[str, list[str], list[str]]] = {}
        self._renders: dict[tuple[str, ...], asyncio.Future[None]] = {}  # misses being rendered

    async def handle(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        route = self._match(scope["path"])
        service = self.get_service()
        if route is None or service is None:
            return await self.app(scope, receive, send)
        spec, view_args = route
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if self.has_session(headers) or has_body(headers) or "authorization" in headers:
            bypass = partial(merge_headers, extra=cache_headers(spec.vary, "bypass"))
            return await self.app(scope, receive, with_response_headers(send, bypass))

        key, topics, gen_keys = self._key_of(service, spec, view_args, scope, headers)
        if_none_match = headers.get("if-none-match")
        gzip_ok = accepts_gzip(headers.get("accept-encoding"))
        recent = self.recent.get(key)
        # The tokens are read on every request; the stored page only when it may be needed
        # and is not already here (a revalidation, or a page this process keeps).
        fetch_entry = not if_none_match and recent is None
        found = await service.client.get_many([*gen_keys, key] if fetch_entry else gen_keys)
        try:
            tokens = [found[gen_key].value for gen_key in gen_keys]
        except KeyError:  # a token not there (expired, evicted, flushed): made anew
            current = await service.generations.current(topics)
            tokens = [current[ns] for ns in topics]
        etag = make_etag(key, tokens, gzip_ok)
        if etag_matches(if_none_match, etag):
            return await send_not_modified(send, spec.vary, etag)

        exchange = Exchange(service, spec, key, tokens, etag, gzip_ok, scope, receive, send)
        usable = await self._usable(exchange, recent, found if fetch_entry else None)
        if usable is not None:
            stored, state = usable
            return await self._send(exchange, stored, state)
        if scope["method"] != "GET":
            return await self.app(scope, receive, self._recording(exchange, send, False))
        rendered = await self._render_once(exchange)
        if rendered is not None:
            await self._send(exchange, rendered, "hit")

    async def _usable(
        self, exchange: Exchange, recent: StoredResponse | None, fetched: Mapping[str, Entry] | None
    ) -> tuple[StoredResponse, str] | None:
        """The response to send for the exchange's tokens and whether it is a `hit` or
        `stale` (a background render then replaces it), or None: a miss. `recent` is the one
        this process keeps; `fetched` holds the entry when it was read with the tokens, else
        it is read now."""
        service, key, tokens = exchange.service, exchange.key, exchange.tokens
        now = service.clock()
        if recent is not None:
            if recent.tokens == tokens and now < recent.soft_expires:
                return recent, "hit"
            self.recent.discard(key)  # outdated, or due a refresh: the shared entry decides
            if recent.tokens != tokens:
                # A write since: the shared entry is all but sure to be older too. Not read
                # here: the miss claims the render, and finds what another process rendered
                # for these tokens if that one holds the claim.
                return None
        entry = fetched.get(key) if fetched is not None else await service.client.get(key)
        if entry is None:
            return None
        stored = _stored(entry, exchange.spec)
        if stored is None or stored.tokens != tokens or now >= stored.expires:
            return None
        if now >= stored.soft_expires:
            self._refresh(exchange)
            return stored, "stale"
        self.recent.put(key, stored)
        return stored, "hit"

    async def _send(self, exchange: Exchange, stored: StoredResponse, state: str) -> None:
        body, gzipped = stored.body_for(exchange.gzip_ok)
        headers = [
            *stored.headers,
            (b"content-length", str(len(body)).encode()),
            (b"x-cache", state.encode()),
            (b"etag", exchange.etag.encode()),
        ]
        if gzipped:
            headers.append((b"content-encoding", b"gzip"))
        send = exchange.send
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body = b"" if exchange.scope["method"] == "HEAD" else body
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _render_once(self, exchange: Exchange) -> StoredResponse | None:
        """Render the exchange's miss (the response is sent and stored as it goes) unless
        the same response is being rendered already, and return None; or return the
        response rendered elsewhere, to send instead: by an earlier request of this process,
        or by another process that claimed it (a lease), once stored. If what is rendered
        elsewhere does not come in time (`Leases.wait`), the miss is rendered after all."""
        service, key, tokens = exchange.service, exchange.key, exchange.tokens
        record = self._recording(exchange, exchange.send, True)
        flight = (key, *map(str, tokens))
        running = self._renders.get(flight)
        if running is not None:
            await asyncio.wait([running], timeout=service.leases.wait)
            recent = self.recent.get(key)
            if recent is not None and recent.tokens == tokens:
                return recent
            await self.app(exchange.scope, exchange.receive, record)
            return None
        done = asyncio.get_running_loop().create_future()
        self._renders[flight] = done
        try:
            lease = await service.claim(*flight)
            if lease is None:
                stored = await self._stored_elsewhere(exchange, flight[1:])
                if stored is not None:
                    self.recent.put(key, stored)
                    return stored
            await self.app(exchange.scope, exchange.receive, record)
            if lease is not None:
                # Released even when stored: the entry's key is the page's, not the tokens',
                # and a render for newer tokens may replace it before a waiter reads it; a
                # waiter stops waiting once the lease is gone, and renders itself.
                await service.release(key, lease, *flight[1:])
            return None
        finally:
            del self._renders[flight]
            done.set_result(None)

    async def _stored_elsewhere(
        self, exchange: Exchange, version: tuple[str, ...]
    ) -> StoredResponse | None:
        """The response another process stores under the exchange's key for the tokens
        `version` names, waited for while it holds the lease."""

        def current(entry: Entry) -> bool:
            response = _stored(entry, exchange.spec)
            return response is not None and tuple(map(str, response.tokens)) == version

        entry = await exchange.service.wait_for(exchange.key, current, *version)
        return None if entry is None else _stored(entry, exchange.spec)

    def _recording(self, exchange: Exchange, send: Send, storable: bool) -> ResponseRecorder:
        """The `send` to render the exchange's miss with: on to `send`, stored if
        `storable` (a GET) and shareable."""
        headers = cache_headers(exchange.spec.vary, "miss")
        return ResponseRecorder(
            send, partial(self._store, exchange), headers, exchange.etag, storable
        )

    async def _store(self, exchange: Exchange, captured: CapturedResponse) -> None:
        service, key, spec = exchange.service, exchange.key, exchange.spec
        headers = [(name, value) for name, value in captured.headers
                   if name.lower() not in UNSTORED_HEADERS]
        encoded = any(name.lower() == b"content-encoding" for name, _ in headers)
        stored = StoredResponse.build(
            exchange.tokens, headers, bytes(captured.body), created=service.clock(),
            timeout=spec.timeout, compress=not encoded,
        )
        meta, payload = stored.to_cache()
        self.recent.put(key, stored)
        await service.client.set(
            key, meta, spec.timeout * 2, soft_ttl=spec.timeout, payload=payload
        )

    def _refresh(self, exchange: Exchange) -> None:
        """Render the view again in the background (no cookies, as for any shared entry)
        and store it; the current tokens still hold, so the data is just as fresh."""
        scope = exchange.scope
        headers = [(n, v) for n, v in scope["headers"] if n not in (b"cookie", b"if-none-match")]
        request = {**scope, "method": "GET", "headers": headers}

        async def render() -> None:
            client = BackgroundClient()
            await self.app(request, client.receive, self._recording(exchange, client.send, True))

        exchange.service.refresh_in_background(exchange.key, render)

    def _key_of(
        self, service: CacheService, spec: ViewCacheSpec, view_args: dict[str, Any],
        scope: Message, headers: Mapping[str, str],
    ) -> tuple[str, list[str], list[str]]:
        """The entry's key, its topics and their generation keys (memoized per URL and
        variant: building them costs more than the rest of a hit)."""
        variant = self.variant(headers) if spec.vary else "-"
        memo = (scope["path"], scope.get("query_string", b""), variant)
        found = self._keys.get(memo)
        if found is None:
            key = service.keys.key(
                KeyKinds.VIEW, self.release, scope["path"], _sorted_query(scope), variant
            )
            topics = [ns.format(**view_args) for ns in spec.topics]
            gen_keys = [service.generations.key(ns) for ns in topics]
            found = (key, topics, gen_keys)
            if len(self._keys) >= MEMO_SIZE:
                self._keys.clear()
            self._keys[memo] = found
        return found

    def _match(self, path: str) -> ViewMatch | None:
        """The cached route at `path` and its arguments (memoized: a path always matches
        the same route)."""
        if path in self._matches:
            return self._matches[path]
        if self._routes is None:
            self._routes = self._cached_routes()
        try:
            spec, view_args = self._routes.match(path, method="GET")
            found: ViewMatch | None = (spec, dict(view_args))
        except HTTPException:
            found = None
        if len(self._matches) >= MEMO_SIZE:
            self._matches.clear()
        self._matches[path] = found
        return found

    def _cached_routes(self) -> MapAdapter:
        """A small map holding only the cached GET routes; the 'endpoint' is the spec."""
        rules: list[Rule] = []
        for rule in self.quart.url_map.iter_rules():
            view = self.quart.view_functions.get(rule.endpoint)
            spec = getattr(view, VIEW_CACHE_ATTRIBUTE, None)
            if spec is not None and "GET" in (rule.methods or ()):
                rules.append(Rule(rule.rule, endpoint=spec, methods=["GET"]))
        return Map(rules, converters=self.quart.url_map.converters).bind("cache.invalid")


def _stored(entry: Entry, spec: ViewCacheSpec) -> StoredResponse | None:
    return StoredResponse.from_cache(
        entry.value, entry.payload, created=entry.created,
        soft_expires=entry.soft_expires, timeout=spec.timeout,
    )


def _sorted_query(scope: Message) -> str:
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return urlencode(sorted(pairs))

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

Bodies are stored as bytes beside the entry's JSON, gzipped once (see `app.webcache.recent`):
a client that accepts gzip gets them as they are, with `Content-Encoding: gzip` and its own
ETag. The responses this process served lately are kept in memory, bounded by bytes, and
served while the tokens read from memcached for the request are still theirs; a hit then
moves only the tokens over the network, and is exactly as fresh as the shared entry.

On a miss the request runs through the app and the response is stored only if it is
shareable: status 200, no `Set-Cookie`, not `private`/`no-store`, no `Vary: *`, and the
request carried no session cookie (a request with a session may hold a pending flash: it
bypasses the cache entirely, as does one that sends a body or credentials). The response
streams to the client as it is produced and is stored once complete, so a miss costs the
client nothing extra.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlencode

from quart import Quart
from werkzeug.exceptions import HTTPException
from werkzeug.http import parse_etags, parse_set_header, unquote_etag
from werkzeug.routing import Map, MapAdapter, Rule

from app.asgi import (
    ASGIApp,
    HeaderLookup,
    HTTPMiddleware,
    Message,
    RawHeaders,
    Receive,
    Send,
    with_response_headers,
)
from app.cache.entry import Entry
from app.cache.keys import Namespaces, digest
from app.cache.service import CacheService

from .recent import RecentResponses, StoredResponse

ViewMatch = tuple["ViewCacheSpec", dict[str, Any]]

VIEW_CACHE_ATTRIBUTE = "view_cache"
# Never replayed from the cache: per-connection or per-user, or recomputed on the way out.
UNSTORED_HEADERS = {b"set-cookie", b"date", b"server", b"etag", b"x-cache", b"content-length"}
MEMO_SIZE = 4096  # paths and keys memoised before the memo starts over (paths are user input)


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
    headers: RawHeaders = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)


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
        if self.has_session(headers) or _has_body(headers) or "authorization" in headers:
            bypass = partial(_merge, extra=_cache_headers(spec, "bypass"))
            return await self.app(scope, receive, with_response_headers(send, bypass))
        await self._serve(service, spec, view_args, scope, headers, receive, send)

    async def _serve(
        self,
        service: CacheService,
        spec: ViewCacheSpec,
        view_args: dict[str, Any],
        scope: Message,
        headers: Mapping[str, str],
        receive: Receive,
        send: Send,
    ) -> None:
        key, namespaces, gen_keys = self._key_of(service, spec, view_args, scope, headers)
        if_none_match = headers.get("if-none-match")
        gzip_ok = accepts_gzip(headers.get("accept-encoding"))
        recent = self.recent.get(key)
        # The tokens are read on every request; the stored page only when it may be needed
        # and is not already here (a revalidation, or a page this process keeps).
        fetch_entry = not if_none_match and recent is None
        found = await service.client.get_many([*gen_keys, key] if fetch_entry else gen_keys)
        if all(gen_key in found for gen_key in gen_keys):
            tokens = [found[gen_key].value for gen_key in gen_keys]
        else:
            current = await service.generations.current(namespaces)
            tokens = [current[ns] for ns in namespaces]
        etag = _etag(key, tokens, gzip_ok)
        if _etag_matches(if_none_match, etag):
            return await _send_not_modified(send, spec, etag)

        fetched = found if fetch_entry else None
        usable = await self._usable(service, key, spec, tokens, recent, fetched, scope)
        if usable is not None:
            stored, state = usable
            return await self._send(send, scope, stored, etag, state, gzip_ok)
        record = self._recording(send, service, key, spec, tokens, etag, scope["method"] == "GET")
        if scope["method"] != "GET":
            return await self.app(scope, receive, record)
        rendered = await self._render_once(
            service, key, spec, tokens, lambda: self.app(scope, receive, record)
        )
        if rendered is not None:
            await self._send(send, scope, rendered, etag, "hit", gzip_ok)

    async def _render_once(
        self,
        service: CacheService,
        key: str,
        spec: ViewCacheSpec,
        tokens: list[Any],
        render: Callable[[], Awaitable[None]],
    ) -> StoredResponse | None:
        """Run `render()` (a miss of `key` at `tokens`, which sends and stores the response)
        unless the same response is being rendered already, and return None; or return the
        response rendered elsewhere, to send instead: by an earlier request of this process,
        or by another process that claimed it (a lease), once stored. If what is rendered
        elsewhere does not come in time (`Leases.wait`), `render` runs after all."""
        flight = (key, *map(str, tokens))
        running = self._renders.get(flight)
        if running is not None:
            await asyncio.wait([running], timeout=service.leases.wait)
            recent = self.recent.get(key)
            if recent is not None and recent.tokens == tokens:
                return recent
            await render()
            return None
        done = asyncio.get_running_loop().create_future()
        self._renders[flight] = done
        try:
            lease = await service.claim(*flight)
            if lease is None:
                stored = await self._stored_elsewhere(service, key, spec, flight[1:])
                if stored is not None:
                    self.recent.put(key, stored)
                    return stored
            await render()
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
        self, service: CacheService, key: str, spec: ViewCacheSpec, version: tuple[str, ...]
    ) -> StoredResponse | None:
        """The response another process stores under `key` for the tokens `version`
        names, waited for while it holds the lease."""

        def stored(entry: Entry) -> StoredResponse | None:
            return StoredResponse.from_cache(
                entry.value, entry.payload, created=entry.created,
                soft_expires=entry.soft_expires, timeout=spec.timeout,
            )

        def current(entry: Entry) -> bool:
            response = stored(entry)
            return response is not None and tuple(map(str, response.tokens)) == version

        entry = await service.wait_for(key, current, *version)
        return None if entry is None else stored(entry)

    async def _usable(
        self,
        service: CacheService,
        key: str,
        spec: ViewCacheSpec,
        tokens: list[Any],
        recent: StoredResponse | None,
        fetched: Mapping[str, Entry] | None,
        scope: Message,
    ) -> tuple[StoredResponse, str] | None:
        """The response to send for these tokens and whether it is a `hit` or `stale` (a
        background render then replaces it), or None: a miss. `fetched` holds the entry when
        it was read with the tokens; else it is read now."""
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
        stored = StoredResponse.from_cache(
            entry.value, entry.payload, created=entry.created,
            soft_expires=entry.soft_expires, timeout=spec.timeout,
        )
        if stored is None or stored.tokens != tokens or now >= stored.expires:
            return None
        if now >= stored.soft_expires:
            self._refresh(service, key, spec, tokens, scope)
            return stored, "stale"
        self.recent.put(key, stored)
        return stored, "hit"

    def _key_of(
        self, service: CacheService, spec: ViewCacheSpec, view_args: dict[str, Any],
        scope: Message, headers: Mapping[str, str],
    ) -> tuple[str, list[str], list[str]]:
        """The entry's key, its namespaces and their generation keys (memoised per URL and
        variant: building them costs more than the rest of a hit)."""
        variant = self.variant(headers) if spec.vary else "-"
        memo = (scope["path"], scope.get("query_string", b""), variant)
        found = self._keys.get(memo)
        if found is None:
            key = service.keys.key(
                Namespaces.VIEW, self.release, scope["path"], _sorted_query(scope), variant
            )
            namespaces = [ns.format(**view_args) for ns in spec.namespaces]
            gen_keys = [service.generations.key(ns) for ns in namespaces]
            found = (key, namespaces, gen_keys)
            if len(self._keys) >= MEMO_SIZE:
                self._keys.clear()
            self._keys[memo] = found
        return found

    def _recording(
        self,
        send: Send,
        service: CacheService,
        key: str,
        spec: ViewCacheSpec,
        tokens: list[Any],
        etag: str,
        storable: bool,
    ) -> Send:
        store = partial(self._store, service, key, spec, tokens)
        return ResponseRecorder(send, store, _cache_headers(spec, "miss"), etag, storable)

    async def _store(
        self,
        service: CacheService,
        key: str,
        spec: ViewCacheSpec,
        tokens: list[Any],
        captured: CapturedResponse,
    ) -> None:
        headers = [(name, value) for name, value in captured.headers
                   if name.lower() not in UNSTORED_HEADERS]
        encoded = any(name.lower() == b"content-encoding" for name, _ in headers)
        stored = StoredResponse.build(
            tokens, headers, bytes(captured.body), created=service.clock(),
            timeout=spec.timeout, compress=not encoded,
        )
        meta, payload = stored.to_cache()
        self.recent.put(key, stored)
        await service.client.set(
            key, meta, spec.timeout * 2, soft_ttl=spec.timeout, payload=payload
        )

    async def _send(
        self,
        send: Send,
        scope: Message,
        stored: StoredResponse,
        etag: str,
        state: str,
        gzip_ok: bool,
    ) -> None:
        body, gzipped = stored.body_for(gzip_ok)
        headers = [
            *stored.headers,
            (b"content-length", str(len(body)).encode()),
            (b"x-cache", state.encode()),
            (b"etag", etag.encode()),
        ]
        if gzipped:
            headers.append((b"content-encoding", b"gzip"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        body = b"" if scope["method"] == "HEAD" else body
        await send({"type": "http.response.body", "body": body, "more_body": False})

    def _refresh(
        self,
        service: CacheService,
        key: str,
        spec: ViewCacheSpec,
        tokens: list[Any],
        scope: Message,
    ) -> None:
        """Render the view again in the background (no cookies, as for any shared entry)
        and store it; the current tokens still hold, so the data is just as fresh."""
        headers = [(n, v) for n, v in scope["headers"] if n not in (b"cookie", b"if-none-match")]
        request = {**scope, "method": "GET", "headers": headers}

        async def render() -> None:
            client = BackgroundClient()
            record = self._recording(client.send, service, key, spec, tokens, "", True)
            await self.app(request, client.receive, record)

        service.refresh_in_background(key, render)

    def _match(self, path: str) -> ViewMatch | None:
        """The cached route at `path` and its arguments (memoised: a path always matches
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
        self.recording = self.storable and _shareable(captured)
        captured.headers = _merge(captured.headers, self.cache_headers)
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


def _has_body(headers: Mapping[str, str]) -> bool:
    """A GET or HEAD that sends a body: meaningless, but the app must see it to refuse one
    over its size limit, so it is never answered from the cache."""
    return "transfer-encoding" in headers or headers.get("content-length", "0") != "0"


def _sorted_query(scope: Message) -> str:
    pairs = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return urlencode(sorted(pairs))


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


def _etag(key: str, tokens: list[Any], gzipped: bool) -> str:
    """Weak ETag of the representation under `key` and these tokens; a client that takes
    gzip gets another one (the bytes differ)."""
    tag = digest(key + ":" + ":".join(map(str, tokens)))
    return f'W/"{tag}-gz"' if gzipped else f'W/"{tag}"'


def _etag_matches(header: str | None, etag: str) -> bool:
    """Weak comparison against a list of tags. ``*`` is not answered here: whether any
    representation exists is for the view to say (a 404 must never become a 304)."""
    if not header:
        return False
    tags = parse_etags(header)
    return not tags.star_tag and tags.contains_weak(unquote_etag(etag)[0])


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


def _cache_headers(spec: ViewCacheSpec, state: str) -> RawHeaders:
    """`X-Cache`, and a `Vary` naming what picks the answer: the view's variant headers, the
    cookie (a session cookie bypasses the cache) and Accept-Encoding (gzip or not). The
    same on 200, 304 and bypass."""
    vary = ", ".join([*spec.vary, "Cookie", "Accept-Encoding"])
    return [(b"x-cache", state.encode()), (b"vary", vary.encode())]


def _merge(headers: RawHeaders, extra: RawHeaders) -> RawHeaders:
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


async def _send_not_modified(send: Send, spec: ViewCacheSpec, etag: str) -> None:
    headers = [*_cache_headers(spec, "hit"), (b"etag", etag.encode())]
    await send({"type": "http.response.start", "status": 304, "headers": headers})
    await send({"type": "http.response.body", "body": b"", "more_body": False})

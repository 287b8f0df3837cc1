"""`ViewCacheMiddleware` on a small app of its own, on both backends."""

from __future__ import annotations

import asyncio
import gzip
import re
from collections.abc import Awaitable, Callable

import pytest
from quart import Quart, Response

from app.asgi import ASGIApp, wrap_asgi
from app.cache import CacheClient, KeyBuilder, MemcachedBackend
from app.cache.service import CacheService, Leases
from app.webcache.declaration import cached
from app.webcache.middleware import ViewCacheMiddleware
from app.webcache.recent import RecentResponses, StoredResponse
from tests.support.asgi import asgi_request
from tests.support.clock import Clock
from tests.support.memcached import MemcachedProcess


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(cache_client: CacheClient, clock: Clock) -> CacheService:
    timed = CacheClient(cache_client.backend, keys=cache_client.keys, clock=clock)
    return CacheService(timed, clock=clock)


View = Callable[[], Response | str | Awaitable[Response | str]]


def make_app(service: CacheService, view: View, release: str = "r1") -> Quart:
    app = Quart(__name__)
    app.get("/")(cached(10, depends_on=["things"])(view))

    def view_cache(inner: ASGIApp) -> ASGIApp:
        return ViewCacheMiddleware(
            app,
            inner,
            get_service=lambda: service,
            variant=lambda headers: "full",
            has_session=lambda headers: headers.get("cookie") is not None,
            release=release,
        )

    wrap_asgi(app, view_cache)
    return app


async def test_an_old_entry_is_served_stale_while_one_render_replaces_it(
    service: CacheService, clock: Clock
) -> None:
    renders = 0

    async def index() -> str:
        nonlocal renders
        renders += 1
        return f"render {renders}"

    client = make_app(service, index).test_client()
    first = await client.get("/")
    assert (first.headers["X-Cache"], await first.get_data(as_text=True)) == ("miss", "render 1")
    clock.now += 11  # past the timeout, tokens unchanged

    stale = await asyncio.gather(*(client.get("/") for _ in range(20)))
    assert {r.headers["X-Cache"] for r in stale} == {"stale"}
    assert {await r.get_data(as_text=True) for r in stale} == {"render 1"}
    for _ in range(200):
        if renders == 2:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)
    fresh = await client.get("/")
    assert (fresh.headers["X-Cache"], await fresh.get_data(as_text=True)) == ("hit", "render 2")
    assert renders == 2  # one background render for all twenty stale answers


@pytest.mark.parametrize(
    "response",
    [
        Response("x", headers={"Set-Cookie": "a=b"}),
        Response("x", headers={"Cache-Control": "private"}),
        Response("x", headers={"Cache-Control": "no-store"}),
        Response("x", headers={"Vary": "*"}),
        Response("x", status=201),
        Response("x", status=404),
    ],
)
async def test_responses_that_are_not_shareable_are_never_stored(
    service: CacheService, response: Response
) -> None:
    renders = 0

    async def index() -> Response:
        nonlocal renders
        renders += 1
        return response

    app = make_app(service, index)
    for _ in range(3):
        answer = await app.test_client().get("/")  # a new visitor each time: no cookie
        assert answer.headers["X-Cache"] == "miss"
        assert "ETag" not in answer.headers
    assert renders == 3


async def test_a_request_with_a_session_bypasses_the_cache(service: CacheService) -> None:
    async def index() -> str:
        return "page"

    client = make_app(service, index).test_client()
    await client.get("/")
    assert (await client.get("/")).headers["X-Cache"] == "hit"
    bypass = await client.get("/", headers={"Cookie": "session=abc"})
    assert bypass.headers["X-Cache"] == "bypass"
    assert "ETag" not in bypass.headers


async def test_a_bump_makes_the_entry_a_miss(service: CacheService) -> None:
    version = 0

    async def index() -> str:
        return f"version {version}"

    client = make_app(service, index).test_client()
    await client.get("/")
    version = 1
    assert await (await client.get("/")).get_data(as_text=True) == "version 0"
    await service.bump("things")
    after = await client.get("/")
    assert (after.headers["X-Cache"], await after.get_data(as_text=True)) == ("miss", "version 1")


async def test_a_new_release_never_serves_the_pages_of_the_old_one(service: CacheService) -> None:
    async def old() -> str:
        return "old markup"

    async def new() -> str:
        return "new markup"

    old_client = make_app(service, old, release="r1").test_client()
    await old_client.get("/")
    etag = (await old_client.get("/")).headers["ETag"]

    new_client = make_app(service, new, release="r2").test_client()
    answer = await new_client.get("/")
    assert (answer.headers["X-Cache"], await answer.get_data(as_text=True)) == (
        "miss", "new markup"
    )
    assert answer.headers["ETag"] != etag
    revalidated = await new_client.get("/", headers={"If-None-Match": etag})
    assert revalidated.status_code == 200


async def test_a_304_varies_like_the_200_it_stands_for(service: CacheService) -> None:
    async def index() -> str:
        return "page"

    client = make_app(service, index).test_client()
    miss = await client.get("/")
    hit = await client.get("/")
    not_modified = await client.get("/", headers={"If-None-Match": hit.headers["ETag"]})
    assert not_modified.status_code == 304
    assert miss.headers["Vary"] == hit.headers["Vary"] == not_modified.headers["Vary"]
    assert "Cookie" in not_modified.headers["Vary"]


async def test_if_none_match_star_is_left_to_the_view(service: CacheService) -> None:
    """`*` asks whether any representation exists: the cache cannot know, a 404 can."""
    app = Quart(__name__)

    @app.get("/things/<int:thing>")
    @cached(10, depends_on=["things"])
    async def thing(thing: int) -> tuple[str, int]:
        return ("here", 200) if thing == 1 else ("no such thing", 404)

    wrap_asgi(app, lambda inner: ViewCacheMiddleware(
        app, inner, get_service=lambda: service, variant=lambda headers: "full",
        has_session=lambda headers: False, release="r1",
    ))
    client = app.test_client()
    await client.get("/things/1")
    assert (await client.get("/things/2", headers={"If-None-Match": "*"})).status_code == 404
    assert (await client.get("/things/1", headers={"If-None-Match": "*"})).status_code == 200


PAGE = "<p>" + "a row of the list, " * 300 + "</p>"  # ~5.7 KB: worth gzipping


async def test_a_client_that_accepts_gzip_gets_the_stored_gzip_body(
    service: CacheService,
) -> None:
    client = make_app(service, lambda: PAGE).test_client()
    miss = await client.get("/", headers={"Accept-Encoding": "gzip"})
    assert miss.headers["X-Cache"] == "miss" and "Content-Encoding" not in miss.headers

    hit = await client.get("/", headers={"Accept-Encoding": "br, gzip;q=0.8"})
    raw = await hit.get_data(as_text=False)
    assert hit.headers["X-Cache"] == "hit" and hit.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(raw).decode() == PAGE and len(raw) < len(PAGE) // 4
    assert int(hit.headers["Content-Length"]) == len(raw)
    assert "Accept-Encoding" in hit.headers["Vary"]

    plain = await client.get("/", headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert plain.headers["X-Cache"] == "hit" and "Content-Encoding" not in plain.headers
    assert await plain.get_data(as_text=True) == PAGE
    assert int(plain.headers["Content-Length"]) == len(PAGE.encode())
    assert plain.headers["ETag"] != hit.headers["ETag"]  # other bytes, another tag
    revalidated = await client.get(
        "/", headers={"Accept-Encoding": "gzip", "If-None-Match": hit.headers["ETag"]}
    )
    assert revalidated.status_code == 304


async def test_head_of_a_gzip_entry_says_its_length_and_sends_no_body(
    service: CacheService,
) -> None:
    app = make_app(service, lambda: PAGE)
    await app.test_client().get("/")
    gzip_header = [(b"accept-encoding", b"gzip")]
    head = await asgi_request(app.asgi_app, "HEAD", "/", gzip_header)
    got = await asgi_request(app.asgi_app, "GET", "/", gzip_header)
    assert head.headers[b"x-cache"] == b"hit" and head.headers[b"content-encoding"] == b"gzip"
    assert head.body == b"" and got.body
    assert head.headers[b"content-length"] == got.headers[b"content-length"]
    assert int(got.headers[b"content-length"]) == len(got.body)


async def test_a_small_body_is_sent_as_it_is_to_every_client(service: CacheService) -> None:
    client = make_app(service, lambda: "small").test_client()
    await client.get("/")
    hit = await client.get("/", headers={"Accept-Encoding": "gzip"})
    assert hit.headers["X-Cache"] == "hit" and "Content-Encoding" not in hit.headers
    assert await hit.get_data(as_text=True) == "small"


async def test_a_kept_copy_is_a_miss_as_soon_as_another_process_writes(
    service: CacheService,
) -> None:
    """Each app below keeps its own recent copies, as a process does; they share the cache.
    A bump by the other one (a write there) must reach a copy kept here at once."""
    renders = 0

    async def index() -> str:
        nonlocal renders
        renders += 1
        return f"{PAGE} render {renders}"

    here, there = (make_app(service, index).test_client() for _ in range(2))
    await here.get("/")
    assert [(await here.get("/")).headers["X-Cache"] for _ in range(3)] == ["hit"] * 3
    assert (await there.get("/")).headers["X-Cache"] == "hit"  # from the shared entry
    await service.bump("things")  # the other process committed a write
    fresh = await here.get("/")
    assert fresh.headers["X-Cache"] == "miss"
    assert (await fresh.get_data(as_text=True)).endswith("render 2")


def test_recent_responses_keep_the_newest_within_their_bytes() -> None:
    recent = RecentResponses(max_bytes=10_000)

    def response(body: bytes) -> StoredResponse:
        return StoredResponse.build(["t"], [], body, created=0.0, timeout=10, compress=True)

    for name in "abc":
        recent.put(name, response(b"x" * 3000))  # gzipped: 3000 + its small gzip copy
    recent.get("a")  # used: b is now the oldest
    recent.put("d", response(b"y" * 3000))
    assert [recent.get(n) is not None for n in "abcd"] == [True, False, True, True]
    assert recent.bytes <= 10_000
    recent.put("huge", response(bytes(range(256)) * 100))  # larger than the whole budget
    assert recent.get("huge") is None and len(recent) == 3


async def test_a_miss_is_stored_without_losing_its_connection_when_the_client_goes(
    memcached: MemcachedProcess, make_backend: Callable[..., MemcachedBackend]
) -> None:
    """hypercorn reports the client gone right after the last body message, and Quart then
    cancels the request. The store that follows must not be cut off: a cancelled operation
    closes its connection, so every miss would open a new one (and re-authenticate)."""
    client = CacheClient(make_backend([memcached.address]), keys=KeyBuilder("test"))
    service = CacheService(client)
    app = make_app(service, lambda: PAGE)
    await asgi_request(app.asgi_app, "GET", "/")  # warm: the pool opens its connections
    await asyncio.sleep(0.05)
    opened = total_connections(memcached)
    for _ in range(20):
        await service.bump("things")  # a write elsewhere: the next request misses
        assert (await asgi_request(app.asgi_app, "GET", "/")).headers[b"x-cache"] == b"miss"
    await asyncio.sleep(0.05)
    assert total_connections(memcached) - opened <= 2  # the stats probes' own, not 20
    other = make_app(service, lambda: "never rendered")  # nothing kept in its memory
    assert (await other.test_client().get("/")).headers["X-Cache"] == "hit"


def total_connections(memcached: MemcachedProcess) -> int:
    stats = memcached.command(b"stats\r\n").decode()
    found = re.search(r"STAT total_connections (\d+)", stats)
    assert found is not None, stats
    return int(found.group(1))


async def test_concurrent_misses_in_one_process_render_once(cache_client: CacheClient) -> None:
    renders = 0

    async def index() -> str:
        nonlocal renders
        renders += 1
        await asyncio.sleep(0.05)  # long enough for all of them to arrive while it renders
        return f"{PAGE} render {renders}"

    client = make_app(CacheService(cache_client), index).test_client()
    responses = await asyncio.gather(*(client.get("/") for _ in range(20)))
    assert renders == 1
    assert {await r.get_data(as_text=True) for r in responses} == {f"{PAGE} render 1"}
    assert sorted(r.headers["X-Cache"] for r in responses) == ["hit"] * 19 + ["miss"]


async def test_a_miss_another_process_is_rendering_is_served_what_it_stores(
    cache_client: CacheClient,
) -> None:
    """Two apps on one cache stand for two processes: the one that claimed the page renders
    it; the other waits for it rather than rendering it a second time."""
    renders: list[str] = []
    started, release = asyncio.Event(), asyncio.Event()

    def index_of(name: str) -> View:
        async def index() -> str:
            renders.append(name)
            started.set()
            await release.wait()
            return f"{PAGE} rendered by {name}"

        return index

    service = CacheService(cache_client, leases=Leases(ttl=5, wait=5.0, poll=0.01))
    first = make_app(service, index_of("first")).test_client()
    second = make_app(service, index_of("second")).test_client()
    rendering = asyncio.create_task(first.get("/"))
    await started.wait()
    waiting = asyncio.create_task(second.get("/"))
    await asyncio.sleep(0.1)
    release.set()
    answers = [await rendering, await waiting]
    assert renders == ["first"]
    assert [a.headers["X-Cache"] for a in answers] == ["miss", "hit"]
    assert {await a.get_data(as_text=True) for a in answers} == {f"{PAGE} rendered by first"}


async def test_a_claimed_miss_that_stores_nothing_lets_the_waiting_process_render(
    cache_client: CacheClient,
) -> None:
    """A response that is not shared (a 404 here) releases its claim: the other process
    stops waiting at once instead of at the end of its wait (5 s here)."""
    started, release = asyncio.Event(), asyncio.Event()

    async def missing() -> Response:
        started.set()
        await release.wait()
        return Response("gone", status=404)

    async def found() -> str:
        return "found"

    service = CacheService(cache_client, leases=Leases(ttl=30, wait=5.0, poll=0.01))
    first = make_app(service, missing).test_client()
    second = make_app(service, found).test_client()
    rendering = asyncio.create_task(first.get("/"))
    await started.wait()
    waiting = asyncio.create_task(second.get("/"))
    await asyncio.sleep(0.1)
    assert not waiting.done(), "the second process waits for the claimed render"
    release.set()
    assert (await rendering).status_code == 404
    answer = await asyncio.wait_for(waiting, 2.5)  # well before the 5 s wait ends
    assert (answer.headers["X-Cache"], await answer.get_data(as_text=True)) == ("miss", "found")

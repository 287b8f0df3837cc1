"""`ViewCacheMiddleware` on a small app of its own, on both backends."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from quart import Quart, Response

from app.cache import CacheClient
from app.cache.service import CacheService
from app.cache.views import ViewCacheMiddleware, cached
from tests.support.clock import Clock


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(client: CacheClient, clock: Clock) -> CacheService:
    return CacheService(CacheClient(client.backend, keys=client.keys, clock=clock), clock=clock)


def make_app(
    service: CacheService, view: Callable[[], Response | str], release: str = "r1"
) -> Quart:
    app = Quart(__name__)
    app.get("/")(cached(10, depends_on=["things"])(view))
    app.asgi_app = ViewCacheMiddleware(  # type: ignore[method-assign]
        app,
        app.asgi_app,
        get_service=lambda: service,
        variant=lambda headers: "full",
        has_session=lambda headers: "cookie" in headers,
        release=release,
    )
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

    app.asgi_app = ViewCacheMiddleware(  # type: ignore[method-assign]
        app, app.asgi_app, get_service=lambda: service, variant=lambda headers: "full",
        has_session=lambda headers: False, release="r1",
    )
    client = app.test_client()
    await client.get("/things/1")
    assert (await client.get("/things/2", headers={"If-None-Match": "*"})).status_code == 404
    assert (await client.get("/things/1", headers={"If-None-Match": "*"})).status_code == 200

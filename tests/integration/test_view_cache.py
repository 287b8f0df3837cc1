"""The cache wired into the task list: view cache, ETags, sessions and failure, on both
databases and both cache backends (a real memcached process and the in-process cache)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy import event

from app.settings import Settings
from app.state import find_state
from tests.support.memcached import MemcachedProcess

HTMX = {"HX-Request": "true", "HX-Request-Type": "partial"}


@pytest.fixture(params=["memory", "memcached"])
def memcached_process(request: pytest.FixtureRequest) -> Iterator[MemcachedProcess | None]:
    """A memcached of the test's own, or None: the in-process cache."""
    if request.param == "memory":
        yield None
        return
    server = MemcachedProcess().start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def cache_servers(memcached_process: MemcachedProcess | None) -> tuple[str, ...]:
    return () if memcached_process is None else (memcached_process.address,)


@pytest.fixture
def settings(database_url: str, cache_servers: tuple[str, ...]) -> Settings:
    return Settings(
        write_rate_limit=0,
        env="development",
        database_url=database_url,
        memcache_servers=cache_servers,
        cache_op_timeout=0.3,
        cache_retry_timeout=0.2,
    )


class QueryCounter:
    """Counts the SQL statements that read table `task` (a SQLAlchemy event listener)."""

    def __init__(self, app: Quart) -> None:
        self.count = 0
        engine = app.extensions["tasklist"].database.engine.sync_engine
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "task" in statement:
            self.count += 1


@pytest.fixture
def queries(app: Quart) -> QueryCounter:
    return QueryCounter(app)


async def create(client: Client, name: str) -> dict[str, Any]:
    response = await client.post("/api/tasks", json={"name": name})
    assert response.status_code == 201
    task: dict[str, Any] = await response.get_json()
    return task


async def test_list_is_served_from_the_cache_until_a_write(
    client: Client, queries: QueryCounter
) -> None:
    await create(client, "first")
    miss = await client.get("/api/tasks")
    assert miss.headers["X-Cache"] == "miss"
    loaded = queries.count
    hit = await client.get("/api/tasks")
    assert hit.headers["X-Cache"] == "hit"
    assert await hit.get_data() == await miss.get_data()
    assert queries.count == loaded, "a hit never touches the database"

    await create(client, "second")
    after = await client.get("/api/tasks")
    assert after.headers["X-Cache"] == "miss"
    assert [t["name"] for t in (await after.get_json())["items"]] == ["first", "second"]


@pytest.mark.parametrize("path", ["/", "/api/tasks"])
async def test_if_none_match_gives_304_without_the_database(
    client: Client, queries: QueryCounter, path: str
) -> None:
    await create(client, "x")
    first = await client.get(path)
    etag = first.headers["ETag"]
    before = queries.count
    again = await client.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert await again.get_data() == b""
    assert again.headers["ETag"] == etag
    assert queries.count == before

    await create(client, "y")
    changed = await client.get(path, headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag


async def test_single_task_etag_changes_with_that_task_only(
    client: Client, queries: QueryCounter
) -> None:
    task, other = await create(client, "a"), await create(client, "b")
    url = f"/api/tasks/{task['id']}"
    etag = (await client.get(url)).headers["ETag"]
    assert (await client.get(url, headers={"If-None-Match": etag})).status_code == 304

    await client.patch(f"/api/tasks/{other['id']}", json={"done": True})
    assert (await client.get(url, headers={"If-None-Match": etag})).status_code == 304

    await client.patch(url, json={"name": "renamed"})
    fresh = await client.get(url, headers={"If-None-Match": etag})
    assert fresh.status_code == 200
    assert (await fresh.get_json())["name"] == "renamed"


async def test_etag_after_a_cache_flush_is_never_the_old_one(
    app: Quart, client: Client, memcached_process: MemcachedProcess | None
) -> None:
    await create(client, "x")
    etag = (await client.get("/")).headers["ETag"]
    state = find_state(app)
    assert state is not None
    if memcached_process is None:
        await state.cache_client.backend.close()  # the in-process cache: emptied
    else:
        memcached_process.flush()
    again = await client.get("/", headers={"If-None-Match": etag})
    assert again.status_code == 200
    assert again.headers["ETag"] != etag


async def test_htmx_and_full_page_are_different_entries(client: Client) -> None:
    await create(client, "row")
    full = await client.get("/")
    partial = await client.get("/", headers=HTMX)
    assert partial.headers["X-Cache"] == "miss"
    full_body = await full.get_data(as_text=True)
    partial_body = await partial.get_data(as_text=True)
    assert "<html" in full_body and "<html" not in partial_body
    for response in (full, partial, await client.get("/"), await client.get("/", headers=HTMX)):
        assert {"HX-Request", "HX-Request-Type"} <= {
            v.strip() for v in response.headers["Vary"].split(",")
        }
    assert await (await client.get("/", headers=HTMX)).get_data(as_text=True) == partial_body
    assert "<html" in await (await client.get("/")).get_data(as_text=True)


async def test_history_restore_gets_the_full_page(client: Client) -> None:
    await client.get("/", headers=HTMX)
    restore = await client.get(
        "/", headers={**HTMX, "HX-Request-Type": "full", "HX-History-Restore-Request": "true"}
    )
    assert "<html" in await restore.get_data(as_text=True)


async def test_query_string_is_part_of_the_key(client: Client) -> None:
    await client.get("/")
    assert (await client.get("/")).headers["X-Cache"] == "hit"
    assert (await client.get("/?page=2")).headers["X-Cache"] == "miss"
    assert (await client.get("/api/tasks?limit=5&offset=0")).headers["X-Cache"] == "miss"
    assert (await client.get("/api/tasks?offset=0&limit=5")).headers["X-Cache"] == "hit"


async def test_a_flash_never_reaches_another_visitor(app: Quart) -> None:
    alice, bob = app.test_client(), app.test_client()
    await bob.get("/")  # the page is in the cache
    posted = await alice.post("/", form={"name": "Alice's task"})
    assert posted.status_code == 303
    assert "Set-Cookie" in posted.headers  # the flash lives in her session

    alice_page = await alice.get("/")
    assert alice_page.headers["X-Cache"] == "bypass"
    assert "Added “Alice&#39;s task”." in await alice_page.get_data(as_text=True)
    bob_page = await bob.get("/")
    bob_body = await bob_page.get_data(as_text=True)
    assert "Alice&#39;s task" in bob_body  # he sees the new task...
    assert "Added" not in bob_body  # ...but not her message
    assert "Set-Cookie" not in bob_page.headers

    shown = await alice.get("/")  # the flash was shown once: her session is gone
    assert "Added" not in await shown.get_data(as_text=True)


async def test_no_cached_response_carries_set_cookie(app: Quart) -> None:
    visitor = app.test_client()
    await create(visitor, "x")
    for path in ("/", "/api/tasks", "/", "/api/tasks"):
        response = await app.test_client().get(path)
        assert "Set-Cookie" not in response.headers


async def test_a_reader_gets_no_session(app: Quart, client: Client) -> None:
    cache = app.extensions["tasklist"].cache_client
    for path in ("/", "/", "/api/tasks", "/stats"):
        response = await client.get(path)
        assert "Set-Cookie" not in response.headers
    sessions = cache.counters.snapshot()["kinds"].get("session", {})
    assert sessions.get("sets", 0) == 0


async def test_post_is_never_cached(client: Client) -> None:
    first = await client.post("/api/tasks", json={"name": "a"})
    second = await client.post("/api/tasks", json={"name": "a"})
    assert "X-Cache" not in first.headers
    assert (await first.get_json())["id"] != (await second.get_json())["id"]


async def test_head_of_a_cached_route_has_no_body(client: Client) -> None:
    await client.get("/api/tasks")
    head = await client.head("/api/tasks")
    assert head.status_code == 200
    assert head.headers["X-Cache"] == "hit"
    assert await head.get_data() == b""


@pytest.mark.parametrize("path", ["/api/tasks", "/"])
async def test_concurrent_cold_requests_query_the_database_once(
    client: Client, queries: QueryCounter, path: str
) -> None:
    await create(client, "x")  # a write: every cached list is cold now
    before = queries.count
    responses = await asyncio.gather(*(client.get(path) for _ in range(100)))
    assert {r.status_code for r in responses} == {200}
    assert {b"x" in await r.get_data() for r in responses} == {True}
    # The API: one memoized load of the page, one SELECT of its rows that counts them all
    # too. The page: one render, whose SELECT reads the newest rows.
    assert queries.count - before == 1



async def test_readyz_reports_the_cache(
    memcached_app: Quart, memcached_server: MemcachedProcess
) -> None:
    client = memcached_app.test_client()
    ready = await client.get("/readyz")
    assert (ready.status_code, (await ready.get_json())["cache"]) == (200, "ok")
    memcached_server.kill()
    degraded = await client.get("/readyz")
    assert degraded.status_code == 200
    assert (await degraded.get_json()) == {
        "status": "ok", "database": "ok", "cache": "degraded", "write_limit": "off"
    }


async def test_with_memcached_dead_every_request_succeeds_and_reads_are_fresh(
    memcached_app: Quart, memcached_server: MemcachedProcess
) -> None:
    client = memcached_app.test_client()
    task = await create(client, "before")
    await client.get("/")
    await client.get("/api/tasks")
    memcached_server.kill()

    renamed = await client.patch(f"/api/tasks/{task['id']}", json={"name": "during"})
    assert renamed.status_code == 200
    page = await client.get("/")
    assert page.status_code == 200
    assert 'value="during"' in await page.get_data(as_text=True)
    listing = await (await client.get("/api/tasks")).get_json()
    assert [t["name"] for t in listing["items"]] == ["during"]
    assert (await (await client.get(f"/api/tasks/{task['id']}")).get_json())["name"] == "during"
    posted = await client.post("/", form={"name": "added while down"})
    assert posted.status_code == 303
    assert "added while down" in await (await client.get("/")).get_data(as_text=True)

    memcached_server.start()  # back, empty: still fresh
    await create(client, "after")
    names = [t["name"] for t in (await (await client.get("/api/tasks")).get_json())["items"]]
    assert names == ["during", "added while down", "after"]

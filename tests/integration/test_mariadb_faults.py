"""MariaDB going away under the app: every answer is a success or the right 503 (problem+json
under /api, JSON from /readyz, a page elsewhere), never a 500, and the app recovers.

The faults are real. A TCP proxy in front of the server is cut (every connection dropped
mid-use, new ones refused: a server that stops or a network that fails) and restored; and
an admin connection KILLs the app's connections while requests are in flight (what a
restarting server, a failover or an operator does to them).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client
from sqlalchemy import exc, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app import create_app
from app.settings import Settings
from tests.support.databases import empty_tables
from tests.support.fake_servers import CutProxy
from tests.support.unavailable import is_a_proper_503

pytestmark = pytest.mark.mariadb

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SUCCESS = {200, 201, 204, 303, 404}


@pytest.fixture
async def proxy(mariadb_url: str) -> AsyncIterator[CutProxy]:
    url = make_url(mariadb_url)
    proxy = await CutProxy(f"{url.host}:{url.port}").start()
    yield proxy
    await proxy.stop()


def through(proxy: CutProxy, url: str) -> str:
    return make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(False)


@pytest.fixture
async def app(mariadb_url: str, proxy: CutProxy) -> AsyncIterator[Quart]:
    """The app on MariaDB through the proxy, caching off (every request needs the database)."""
    await empty_tables(mariadb_url)
    settings = Settings(
        write_rate_limit=0,
        env="development", database_url=through(proxy, mariadb_url), cache_enabled=False,
        db_pool_size=16, db_max_overflow=0, db_pool_timeout=1, db_connect_timeout=2,
        invalidation_log=False,
    )
    app = create_app(settings)
    async with app.test_app():
        yield app


def requests(client: Client, n: int) -> list[tuple[str, Any]]:
    return [
        ("GET /api/tasks", lambda: client.get("/api/tasks")),
        ("GET /api/tasks/1", lambda: client.get("/api/tasks/1")),
        ("POST /api/tasks", lambda: client.post("/api/tasks", json={"name": f"api {n}"})),
        ("PATCH /api/tasks/1", lambda: client.patch("/api/tasks/1", json={"done": n % 2 == 0})),
        ("GET /", lambda: client.get("/")),
        ("POST /", lambda: client.post("/", data=f"name=form+{n}", headers=FORM)),
        ("GET /readyz", lambda: client.get("/readyz")),
    ]


async def one_request(client: Client, n: int) -> tuple[str, Any]:
    choices = requests(client, n)
    what, send = choices[n % len(choices)]
    return what, await send()


async def seed(client: Client) -> None:
    response = await client.post("/api/tasks", json={"name": "seed"})
    assert response.status_code == 201, await response.get_data(as_text=True)


async def test_a_cut_connection_is_a_503_never_a_500_and_the_app_recovers(
    app: Quart, proxy: CutProxy
) -> None:
    client = app.test_client()
    await seed(client)
    for n in range(7):  # every kind of request, on pooled connections
        assert (await one_request(client, n))[1].status_code in SUCCESS

    await proxy.cut()  # the pooled connections die, and new ones are refused
    for n in range(14):
        assert await is_a_proper_503(*await one_request(client, n), success=SUCCESS)

    await proxy.restore()
    for n in range(14):
        what, response = await one_request(client, n)
        assert response.status_code in SUCCESS, (what, await response.get_data(as_text=True))


async def kill_connections(mariadb_url: str) -> int:
    """KILL every connection to the test database but the admin's own; how many."""
    engine = create_async_engine(mariadb_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as admin:
            ids = (await admin.execute(text(
                "SELECT id FROM information_schema.processlist"
                " WHERE db = DATABASE() AND id <> CONNECTION_ID()"
            ))).scalars().all()
            for connection_id in ids:
                with contextlib.suppress(exc.OperationalError):  # 1094: it ended by itself
                    await admin.execute(text(f"KILL CONNECTION {int(connection_id)}"))
    finally:
        await engine.dispose()
    return len(ids)


async def test_killed_connections_give_503s_never_500s_then_recover(
    app: Quart, mariadb_url: str
) -> None:
    client = app.test_client()
    await seed(client)
    killed = 0
    for round_ in range(10):
        requests = [asyncio.create_task(one_request(client, round_ * 14 + n)) for n in range(14)]
        await asyncio.sleep(0)
        killed += await kill_connections(mariadb_url)
        while round_ % 2 and not all(request.done() for request in requests):
            killed += await kill_connections(mariadb_url)
        for what, response in await asyncio.gather(*requests):
            await is_a_proper_503(what, response, success=SUCCESS)
    assert killed, "the app never held a connection to kill"
    for n in range(14):
        what, response = await one_request(client, n)
        assert response.status_code in SUCCESS, (what, await response.get_data(as_text=True))

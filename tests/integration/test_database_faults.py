"""PostgreSQL ending the app's connections under load: every answer while they die is the
right kind of 503 (problem+json under /api, JSON from /readyz, a page elsewhere) or a
success, never a 500, and the app recovers without a restart.

The faults are real: an admin connection runs `pg_terminate_backend` on every connection
of the test database while requests are in flight, which is what a restarting or
failing-over server does to them (asyncpg's `AdminShutdownError`, then
`ConnectionDoesNotExistError` for the next use of a dead connection).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from quart import Quart, Response
from quart.typing import TestClientProtocol as Client
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from app import create_app
from app.db import DatabaseUnavailable, read, transaction
from app.settings import Settings
from app.state import find_state
from tests.support.databases import POSTGRES_ADMIN_URL, empty_tables
from tests.support.db_errors import wrapped
from tests.support.unavailable import is_a_proper_503

pytestmark = pytest.mark.postgres

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SUCCESS = {200, 201, 204, 303, 404, 410}


@pytest.fixture
async def app(postgres_url: str) -> AsyncIterator[Quart]:
    """The app on PostgreSQL with caching off, so that every request uses the database."""
    await empty_tables(postgres_url)
    settings = Settings(
        write_rate_limit=0,
        env="development", database_url=postgres_url, cache_enabled=False, db_pool_size=4
    )
    app = create_app(settings)
    async with app.test_app():
        yield app


async def terminate_connections(database: str) -> int:
    """End every connection to `database` but the admin's own; how many there were."""
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        rows = await admin.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            database,
        )
    finally:
        await admin.close()
    return len(rows)


async def one_request(client: Client, n: int, task_ids: list[int]) -> tuple[str, Response]:
    """One of the app's reads or writes (HTML, htmx, API, readiness); `(what, response)`."""
    task_id = random.choice(task_ids)
    requests: list[tuple[str, Callable[[], Awaitable[Response]]]] = [
        ("GET /api/tasks", lambda: client.get("/api/tasks")),
        ("GET /api/tasks/id", lambda: client.get(f"/api/tasks/{task_id}")),
        ("POST /api/tasks", lambda: client.post("/api/tasks", json={"name": f"api {n}"})),
        ("PATCH /api/tasks/id", lambda: client.patch(
            f"/api/tasks/{task_id}", json={"name": f"patched {n}", "done": n % 2 == 0}
        )),
        ("GET /", lambda: client.get("/")),
        ("GET / htmx", lambda: client.get("/", headers={"HX-Request": "true"})),
        ("POST /", lambda: client.post("/", data=f"name=form+{n}", headers=FORM)),
        ("POST /id/rename", lambda: client.post(
            f"/{task_id}/rename", data=f"name=renamed+{n}", headers=FORM
        )),
        ("GET /readyz", lambda: client.get("/readyz")),
    ]
    what, send = requests[n % len(requests)]
    return what, await send()


async def test_terminated_connections_give_503s_never_500s_then_recover(
    app: Quart, postgres_url: str
) -> None:
    client = app.test_client()
    database = make_url(postgres_url).database
    assert database
    task_ids = []
    for n in range(5):
        response = await client.post("/api/tasks", json={"name": f"seed {n}"})
        task_ids.append((await response.get_json())["id"])

    # Each round ends the connections once as the requests start, or keeps ending them
    # while they run (then a retry can meet a dead connection too, and a 503 is due).
    unavailable = terminated = 0
    for round_ in range(12):
        requests = [
            asyncio.create_task(one_request(client, round_ * 40 + n, task_ids))
            for n in range(40)
        ]
        await asyncio.sleep(random.uniform(0, 0.02))
        terminated += await terminate_connections(database)
        while round_ % 2 and not all(request.done() for request in requests):
            terminated += await terminate_connections(database)
        for what, response in await asyncio.gather(*requests):
            unavailable += await is_a_proper_503(what, response, success=SUCCESS)
    assert terminated, "the app never held a connection to terminate"
    assert unavailable, "no request met a dead connection twice: the faults were too mild"

    # Recovered: the next requests all succeed, on fresh connections.
    for n in range(27):
        what, response = await one_request(client, n, task_ids)
        assert response.status_code in SUCCESS, (what, response.status_code)


STATE_ERROR = "cannot switch to state 15; another operation (2) is in progress"


async def driver_connection(connection: AsyncConnection) -> asyncpg.Connection:
    driver: asyncpg.Connection | None = (await connection.get_raw_connection()).driver_connection
    assert driver is not None, "the connection is checked out"
    return driver


async def test_a_read_on_a_connection_asyncpg_left_broken_drops_it_and_retries(
    app: Quart,
) -> None:
    """asyncpg's `InternalClientError` leaves the connection open, so SQLAlchemy would
    pool it again: the app invalidates it and reads once more on a fresh one."""
    state = find_state(app)
    assert state is not None
    used: list[asyncpg.Connection] = []

    async def query(connection: AsyncConnection) -> int:
        used.append(await driver_connection(connection))
        if len(used) == 1:
            broken_state = asyncpg.exceptions.InternalClientError(STATE_ERROR)
            raise wrapped(state.database.engine, broken_state)
        one: int = (await connection.execute(text("SELECT 1"))).scalar_one()
        return one

    assert await read(state.database.reader, query) == 1
    assert used[0].is_closed(), "the broken connection went back to the pool"
    assert used[1] is not used[0]


async def test_a_write_on_a_connection_asyncpg_left_broken_drops_it_for_a_retry(
    app: Quart,
) -> None:
    state = find_state(app)
    assert state is not None
    with pytest.raises(DatabaseUnavailable) as raised:
        async with transaction(state.database.sessions) as session:
            broken = await driver_connection(await session.connection())
            broken_state = asyncpg.exceptions.InternalClientError(STATE_ERROR)
            raise wrapped(state.database.engine, broken_state)
    assert raised.value.stale_connection, "the task service retries only a stale connection"
    assert broken.is_closed(), "the broken connection went back to the pool"
    async with transaction(state.database.sessions) as session:
        assert await driver_connection(await session.connection()) is not broken


@pytest.mark.parametrize("action", ["create", "delete"])
async def test_a_write_that_committed_is_not_a_503_when_the_count_after_it_fails(
    app: Quart, action: str
) -> None:
    """The htmx answer to a create or delete updates the count; if the database is gone by
    then, the committed write must still be answered as done (a retried create would be
    stored twice), without the count."""
    client = app.test_client()
    headers = {"HX-Request": "true", "HX-Request-Type": "partial", "Sec-Fetch-Site": "same-origin"}
    state = find_state(app)
    assert state is not None
    tasks = state.tasks
    kept = await tasks.create("kept")

    async def count_fails() -> int | None:
        raise DatabaseUnavailable("the database went away after the write")

    tasks.count = count_fails  # type: ignore[method-assign]  # the fault: this one call fails
    if action == "create":
        response = await client.post("/", form={"name": "after the write"}, headers=headers)
    else:
        response = await client.post(f"/{kept.id}/delete", headers=headers)
    body = await response.get_data(as_text=True)
    assert response.status_code == 200, body
    assert "task-summary" not in body  # no count, rather than a wrong one
    names = [task["name"] for task in (await tasks.list_page()).tasks]
    assert ("after the write" in names) if action == "create" else ("kept" not in names)

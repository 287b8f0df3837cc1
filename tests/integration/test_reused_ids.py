"""A deleted task's id handed out again: SQLite does it for the highest id (the next rowid is
the largest one plus one), MySQL before 8.0 after a restart (its AUTO_INCREMENT counter was
max(id) + 1 when the table was opened), a PostgreSQL sequence set back by hand. The new task
must never show what was cached for the old one: not its row fragment, not its API entry."""

from __future__ import annotations

import re

import pytest
from quart.typing import TestClientProtocol as Client
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.databases import EVERY_BACKEND

pytestmark = pytest.mark.parametrize("database_url", EVERY_BACKEND, indirect=True)

HTMX = {"HX-Request": "true"}
ROW_NAME = re.compile(r'id="task-(\d+)-name" name="name" value="([^"]*)"')
# What makes each engine give out max(id) + 1 next, as MySQL 5.7 did on every restart.
RESET_COUNTER = {
    "sqlite": None,  # does it by itself
    "postgresql": "SELECT setval(pg_get_serial_sequence('task', 'id'), (SELECT max(id) FROM task))",
    "mysql": "ALTER TABLE task AUTO_INCREMENT = 1",  # InnoDB takes max(id) + 1
}


async def hand_out_deleted_ids_again(database_url: str) -> None:
    engine = create_async_engine(database_url)
    try:
        statement = RESET_COUNTER[engine.dialect.name]
        if statement is not None:
            async with engine.begin() as connection:
                await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def rows(client: Client, headers: dict[str, str] | None = None) -> dict[int, str]:
    response = await client.get("/", headers=headers or {})
    assert response.status_code == 200
    return {int(i): name for i, name in ROW_NAME.findall(await response.get_data(as_text=True))}


async def test_a_new_task_under_the_deleted_highest_id_shows_nothing_cached_of_the_old(
    client: Client, database_url: str
) -> None:
    ids = []
    for name in ("first", "second", "highest"):
        response = await client.post("/api/tasks", json={"name": name})
        ids.append((await response.get_json())["id"])
    old = ids[-1]
    # Everything that shows the highest task, cached: page, fragment, task, list.
    assert (await rows(client))[old] == "highest"
    assert (await rows(client, HTMX))[old] == "highest"
    assert (await (await client.get(f"/api/tasks/{old}")).get_json())["name"] == "highest"
    assert (await client.get(f"/api/tasks/{old}")).headers["X-Cache"] == "hit"
    await client.get("/api/tasks")

    assert (await client.delete(f"/api/tasks/{old}")).status_code == 204
    assert (await client.get(f"/api/tasks/{old}")).status_code == 404  # "no such task", cached
    await hand_out_deleted_ids_again(database_url)
    response = await client.post("/api/tasks", json={"name": "newcomer"})
    assert (await response.get_json())["id"] == old, "the engine handed out the deleted id"

    assert (await rows(client))[old] == "newcomer"
    assert (await rows(client, HTMX))[old] == "newcomer"
    assert (await (await client.get(f"/api/tasks/{old}")).get_json())["name"] == "newcomer"
    listed = (await (await client.get("/api/tasks")).get_json())["items"]
    assert [task["name"] for task in listed] == ["first", "second", "newcomer"]

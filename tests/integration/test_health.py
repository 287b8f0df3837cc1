"""Liveness, readiness and the 503 answer when the database is down."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from quart import Quart

from app import create_app
from app.settings import Settings


async def test_healthz_and_readyz_when_all_is_well(app: Quart) -> None:
    client = app.test_client()
    assert await (await client.get("/healthz")).get_json() == {"status": "ok"}
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert (await response.get_json())["database"] == "ok"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
async def app_without_database() -> AsyncIterator[Quart]:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{closed_port()}/nothing"
    app = create_app(
        Settings(write_rate_limit=0, env="development", database_url=url, db_connect_timeout=2)
    )
    async with app.test_app():
        yield app


async def test_database_down_gives_503_everywhere_it_is_needed(
    app_without_database: Quart,
) -> None:
    client = app_without_database.test_client()
    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert (await ready.get_json())["database"] == "down"

    api = await client.get("/api/tasks")
    assert api.status_code == 503
    assert api.mimetype == "application/problem+json"
    assert api.headers["Retry-After"]
    created = await client.post("/api/tasks", json={"name": "x"})
    assert created.status_code == 503

    html = await client.get("/")
    assert html.status_code == 503
    assert html.mimetype == "text/html"
    assert "database is unavailable" in await html.get_data(as_text=True)


async def test_an_unexpected_error_is_a_500_page_without_details(settings: Settings) -> None:
    app = create_app(settings)

    async def boom() -> str:
        raise RuntimeError("secret internals")

    app.add_url_rule("/boom", "boom", boom)
    app.add_url_rule("/api/boom", "api_boom", boom)
    async with app.test_app():
        client = app.test_client()
        page = await client.get("/boom")
        body = await page.get_data(as_text=True)
        assert page.status_code == 500
        assert page.mimetype == "text/html"
        assert "Back to the task list" in body and "secret internals" not in body
        api = await client.get("/api/boom")
        assert api.status_code == 500
        assert api.mimetype == "application/problem+json"
        assert "secret internals" not in await api.get_data(as_text=True)

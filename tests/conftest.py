"""Fixtures shared by every test: databases (SQLite, PostgreSQL and, where a module asks for
it, MariaDB), the app and its client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

pytest.register_assert_rewrite("tests.support")

from quart import Quart  # noqa: E402
from quart.typing import TestClientProtocol  # noqa: E402

from app import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from tests.support.databases import (  # noqa: E402
    BACKENDS,
    empty_tables,
    run_alembic,
    sqlite_url,
)

pytest_plugins = ["tests.support.databases", "tests.support.mariadb", "tests.support.memcached"]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database: a SQLite file, or the run's PostgreSQL (or MariaDB, see
    `EVERY_BACKEND`) database."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path)
        run_alembic(url, ("upgrade", "head"))
        return url
    served: str = request.getfixturevalue(f"{request.param}_url")
    asyncio.run(empty_tables(served))
    return served


@pytest.fixture
def settings(database_url: str) -> Settings:
    """The app's settings for a test. Apps in the tests take writes without a limit
    (`write_rate_limit=0`, here and wherever a test makes its own settings), as the
    benchmarks' servers do: their loops write far more than a client may.
    tests/integration/test_write_limit.py turns the limit on."""
    return Settings(write_rate_limit=0, env="development", database_url=database_url)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Quart]:
    app = create_app(settings)
    async with app.test_app():
        yield app


@pytest.fixture
def client(app: Quart) -> TestClientProtocol:
    return app.test_client()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the browser tests last: sync Playwright keeps an event loop running in the main
    thread for as long as its browser lives, which the asyncio tests cannot share."""
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)

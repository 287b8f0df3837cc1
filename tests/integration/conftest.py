"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from quart import Quart

from app import create_app
from tests.support.memcached import MemcachedProcess, settings_with


@pytest.fixture
async def memcached_app(
    database_url: str, memcached_server: MemcachedProcess
) -> AsyncIterator[Quart]:
    """The app on `database_url` and a memcached of the test's own (which it may kill)."""
    app = create_app(settings_with(database_url, memcached_server))
    async with app.test_app():
        yield app

"""The MariaDB server for the tests: one database per run, created and dropped here.

MariaDB is found at `TASKLIST_TEST_MARIADB_URL` (default: the CI machine's
`mysql://root@127.0.0.1:3306/`). If it cannot be reached the run fails, unless a person
sets `TASKLIST_TEST_SKIP_MARIADB=1` on purpose. Register with
``pytest_plugins = ["tests.support.mariadb"]`` for the `mariadb_url` fixture.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.settings import normalise_database_url
from tests.support.databases import run_alembic

MARIADB_SERVER_URL = os.environ.get("TASKLIST_TEST_MARIADB_URL", "mysql://root@127.0.0.1:3306/")
SKIP_MARIADB = os.environ.get("TASKLIST_TEST_SKIP_MARIADB") == "1"


async def _admin(statement: str) -> None:
    engine = create_async_engine(
        normalise_database_url(MARIADB_SERVER_URL), isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


def create_mariadb_database() -> str:
    """Create an empty database with a unique name and return its async URL."""
    if SKIP_MARIADB:
        pytest.skip("TASKLIST_TEST_SKIP_MARIADB=1: MariaDB tests skipped on purpose")
    name = f"tasklist_test_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_admin(f"CREATE DATABASE `{name}`"))
    except Exception as error:  # noqa: BLE001 - any failure here means "cannot reach it"
        pytest.fail(
            f"MariaDB is not reachable at {make_url(MARIADB_SERVER_URL).render_as_string()} "
            f"({error.__class__.__name__}: {error}). Start it, point TASKLIST_TEST_MARIADB_URL "
            "at one, or set TASKLIST_TEST_SKIP_MARIADB=1 to skip those tests on purpose.",
            pytrace=False,
        )
    url = make_url(MARIADB_SERVER_URL).set(database=name)
    return normalise_database_url(url.render_as_string(hide_password=False))


def drop_mariadb_database(url: str) -> None:
    asyncio.run(_admin(f"DROP DATABASE IF EXISTS `{make_url(url).database}`"))


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    """A migrated MariaDB database for this test run, dropped at the end."""
    url = create_mariadb_database()
    run_alembic(url, ("upgrade", "head"))
    yield url
    drop_mariadb_database(url)

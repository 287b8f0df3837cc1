"""Real databases for the tests: a SQLite file per test, and one PostgreSQL database per run.

PostgreSQL is found at `TASKLIST_TEST_POSTGRES_URL` (default: the CI machine's
`postgresql://postgres@127.0.0.1:5432/postgres`). If it cannot be reached the run fails,
unless a person sets `TASKLIST_TEST_SKIP_POSTGRES=1` on purpose.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from alembic import command
from app.settings import PROJECT_ROOT, normalise_database_url

POSTGRES_ADMIN_URL = os.environ.get(
    "TASKLIST_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SKIP_POSTGRES = os.environ.get("TASKLIST_TEST_SKIP_POSTGRES") == "1"
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
# For the tests that also run on MariaDB (tests/support/mariadb.py), with
# `pytest.mark.parametrize("database_url", EVERY_BACKEND, indirect=True)`.
EVERY_BACKEND = [*BACKENDS, pytest.param("mariadb", marks=pytest.mark.mariadb)]


def alembic_config() -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False
    return config


def run_alembic(url: str, *commands: tuple[str, str]) -> None:
    """Run alembic commands (e.g. `("upgrade", "head")`) on `url` over one connection."""

    def run(connection: Connection) -> None:
        config = alembic_config()
        config.attributes["connection"] = connection
        for name, revision in commands:
            getattr(command, name)(config, revision)

    async def main() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(run)
        finally:
            await engine.dispose()

    asyncio.run(main())


@pytest.fixture
def sqlite_database(tmp_path: Path) -> str:
    """A migrated SQLite database of this test's own."""
    url = sqlite_url(tmp_path)
    run_alembic(url, ("upgrade", "head"))
    return url


def sqlite_url(directory: Path) -> str:
    return f"sqlite+aiosqlite:///{directory / 'tasklist.sqlite3'}"


def run_on_server(server_url: str, statement: str) -> None:
    """Run `statement` (a CREATE or DROP DATABASE) on the server at `server_url`, outside
    a transaction."""

    async def main() -> None:
        engine = create_async_engine(
            normalise_database_url(server_url), isolation_level="AUTOCOMMIT"
        )
        try:
            async with engine.connect() as connection:
                await connection.execute(text(statement))
        finally:
            await engine.dispose()

    asyncio.run(main())


def create_database_on(
    server_url: str, *, server: str, quote: str, skip: bool, url_variable: str, skip_variable: str
) -> str:
    """Create an empty database with a unique name on the `server` (PostgreSQL, MariaDB) at
    `server_url` and return its async URL; `quote` quotes an identifier in its SQL. The test
    is skipped if `skip` (set by `skip_variable=1`); if the server cannot be reached it fails,
    naming the variables that point at another server (`url_variable`) or skip its tests."""
    if skip:
        pytest.skip(f"{skip_variable}=1: {server} tests skipped on purpose")
    name = f"tasklist_test_{uuid.uuid4().hex[:10]}"
    try:
        run_on_server(server_url, f"CREATE DATABASE {quote}{name}{quote}")
    except Exception as error:  # noqa: BLE001 - any failure here means "cannot reach it"
        pytest.fail(
            f"{server} is not reachable at {make_url(server_url).render_as_string()} "
            f"({error.__class__.__name__}: {error}). Start it, point {url_variable} "
            f"at one, or set {skip_variable}=1 to skip those tests on purpose.",
            pytrace=False,
        )
    url = make_url(server_url).set(database=name)
    return normalise_database_url(url.render_as_string(hide_password=False))


def create_postgres_database() -> str:
    """Create an empty database with a unique name and return its async URL."""
    return create_database_on(
        POSTGRES_ADMIN_URL, server="PostgreSQL", quote='"', skip=SKIP_POSTGRES,
        url_variable="TASKLIST_TEST_POSTGRES_URL", skip_variable="TASKLIST_TEST_SKIP_POSTGRES",
    )


def drop_postgres_database(url: str) -> None:
    database = make_url(url).database
    run_on_server(POSTGRES_ADMIN_URL, f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A migrated PostgreSQL database for this test run, dropped at the end."""
    yield from migrated(create_postgres_database(), drop_postgres_database)


def migrated(url: str, drop: Callable[[str], None]) -> Iterator[str]:
    """For a fixture to yield from: `url`, migrated to head, then dropped with `drop`."""
    run_alembic(url, ("upgrade", "head"))
    yield url
    drop(url)


async def empty_tables(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            if connection.dialect.name == "mysql":  # one table a statement, ids from 1 again
                for table in ("task", "cache_invalidation"):
                    await connection.execute(text(f"TRUNCATE TABLE {table}"))
            else:
                await connection.execute(text("TRUNCATE task, cache_invalidation RESTART IDENTITY"))
    finally:
        await engine.dispose()

"""Alembic: upgrade, downgrade and upgrade again, and the models match the migrations."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import Base
from app.settings import PROJECT_ROOT
from app.tasks import models  # noqa: F401
from tests.support.databases import (
    EVERY_BACKEND,
    create_postgres_database,
    drop_postgres_database,
    run_alembic,
    sqlite_url,
)
from tests.support.mariadb import create_mariadb_database, drop_mariadb_database

SERVERS = {
    "postgres": (create_postgres_database, drop_postgres_database),
    "mariadb": (create_mariadb_database, drop_mariadb_database),
}
# The scheme each platform hands out, for the async URL the tests use.
PLATFORM_SCHEMES = {"postgresql": "postgres", "mysql": "mysql+mysqldb"}
DEFAULT_PORTS = {"postgresql": 5432, "mysql": 3306}


@pytest.fixture(params=EVERY_BACKEND)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    yield from server_database(request.param)


@pytest.fixture(params=[backend for backend in EVERY_BACKEND if backend != "sqlite"])
def empty_server_database(request: pytest.FixtureRequest) -> Iterator[str]:
    yield from server_database(request.param)


def server_database(backend: str) -> Iterator[str]:
    create, drop = SERVERS[backend]
    url = create()
    yield url
    drop(url)


# What autogenerate finds: a tuple per difference, e.g. ("add_table", Table), or a list of
# tuples for the changes to one column.
SchemaDiff = list[tuple[Any, ...] | list[tuple[Any, ...]]]


def inspect_database(url: str) -> tuple[set[str], SchemaDiff]:
    def read(connection: Connection) -> tuple[set[str], SchemaDiff]:
        tables = set(inspect(connection).get_table_names())
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return tables, compare_metadata(context, Base.metadata)

    async def main() -> tuple[set[str], SchemaDiff]:
        engine = create_async_engine(url)
        try:
            async with engine.connect() as connection:
                return await connection.run_sync(read)
        finally:
            await engine.dispose()

    return asyncio.run(main())


def test_upgrade_downgrade_upgrade_leaves_no_autogenerate_diff(empty_database: str) -> None:
    run_alembic(empty_database, ("upgrade", "head"))
    tables, diff = inspect_database(empty_database)
    assert "task" in tables
    assert diff == []

    run_alembic(empty_database, ("downgrade", "base"))
    tables, _ = inspect_database(empty_database)
    assert tables <= {"alembic_version"}

    run_alembic(empty_database, ("upgrade", "head"))
    tables, diff = inspect_database(empty_database)
    assert "task" in tables
    assert diff == []


def test_the_alembic_command_migrates_the_database_named_by_database_url(
    empty_database: str,
) -> None:
    """The run convention: `alembic upgrade head` reads DATABASE_URL (in the form a PaaS
    hands out: Heroku's `postgres://`, PythonAnywhere's `mysql+mysqldb://`) through
    alembic/env.py, with nothing passed in."""
    url = make_url(empty_database)
    if url.get_backend_name() in PLATFORM_SCHEMES:
        url = url.set(drivername=PLATFORM_SCHEMES[url.get_backend_name()], query={})
    alembic_upgrade_head({"DATABASE_URL": url.render_as_string(hide_password=False)})
    tables, diff = inspect_database(empty_database)
    assert "task" in tables
    assert diff == []


def test_the_alembic_command_migrates_the_database_named_by_elastic_beanstalks_variables(
    empty_server_database: str,
) -> None:
    """Elastic Beanstalk's leader runs `alembic upgrade head` (.ebextensions) with the
    `RDS_*` variables of the environment's database, and no DATABASE_URL."""
    url = make_url(empty_server_database)
    alembic_upgrade_head({
        "RDS_HOSTNAME": url.host or "",
        "RDS_PORT": str(url.port or DEFAULT_PORTS[url.get_backend_name()]),
        "RDS_DB_NAME": url.database or "",
        "RDS_USERNAME": url.username or "",
        "RDS_PASSWORD": url.password or "",
    })
    tables, diff = inspect_database(empty_server_database)
    assert "task" in tables
    assert diff == []


def alembic_upgrade_head(database: dict[str, str]) -> None:
    """`alembic upgrade head` as a deploy runs it, with these variables naming the database
    (and none inherited from this process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "RDS_"))}
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=PROJECT_ROOT, env={**env, **database}, check=True, capture_output=True,
    )

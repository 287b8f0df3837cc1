"""Alembic: upgrade, downgrade and upgrade again, and the models match the migrations."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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
    BACKENDS,
    create_postgres_database,
    drop_postgres_database,
    run_alembic,
    sqlite_url,
)


@pytest.fixture(params=BACKENDS)
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path)
        return
    url = create_postgres_database()
    yield url
    drop_postgres_database(url)


def inspect_database(url: str) -> tuple[set[str], list]:
    def read(connection: Connection) -> tuple[set[str], list]:
        tables = set(inspect(connection).get_table_names())
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return tables, compare_metadata(context, Base.metadata)

    async def main() -> tuple[set[str], list]:
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
    """The run convention: `alembic upgrade head` reads DATABASE_URL (a PaaS `postgres://`
    URL included) through alembic/env.py, with nothing passed in."""
    url = make_url(empty_database)
    if url.get_backend_name() == "postgresql":
        url = url.set(drivername="postgres")  # as Heroku-style add-ons hand it out
    env = {**os.environ, "DATABASE_URL": url.render_as_string(hide_password=False)}
    subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=PROJECT_ROOT, env=env, check=True, capture_output=True,
    )
    tables, diff = inspect_database(empty_database)
    assert "task" in tables
    assert diff == []

"""The HTTP benchmark's servers: what it starts, and what the run was on.

`started_services()` makes the run's services: a fresh PostgreSQL database and a fresh
MariaDB one (migrated by Alembic; `TASKLIST_TEST_POSTGRES_URL` and
`TASKLIST_TEST_MARIADB_URL` as for the tests) and a memcached on a free port, all gone
afterwards (the servers' logs kept if the run failed). `app_server` is the app as production
runs it (`hypercorn --config hypercorn.toml 'app:create_app()'`, `APP_ENV=production`), or
under uvicorn or granian; `baseline_server` a bench/baselines.py app. `seed` fills the task
table; `versions` and `production_config` say what the run was on.
"""

from __future__ import annotations

import asyncio
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import insert, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.tasks.repository import TASK
from bench.harness import ROOT, WRK, Server, started_or_exit
from tests.support.databases import (
    create_postgres_database,
    drop_postgres_database,
    run_alembic,
)
from tests.support.mariadb import create_mariadb_database, drop_mariadb_database
from tests.support.memcached import MEMCACHED, MemcachedProcess, free_port

BIN = Path(sys.executable).parent  # .venv/bin: the script runs under .venv/bin/python


@dataclass
class Services:
    """What every server of the run shares: the database, memcached, a log directory; and
    the MariaDB database of the MySQL column (`on_mariadb()`: the same, on it)."""

    database_url: str
    memcached: MemcachedProcess
    logs: Path
    mariadb_url: str = ""
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def on_mariadb(self) -> Services:
        return replace(self, database_url=self.mariadb_url)

    def app_env(self, cache: bool) -> dict[str, str]:
        return {"APP_ENV": "production", "SECRET_KEY": self.secret_key,
                "DATABASE_URL": self.database_url,
                "MEMCACHIER_SERVERS": self.memcached.address,
                "CACHE_ENABLED": "1" if cache else "0",
                "WRITE_RATE_LIMIT": "0"}  # the loops write far more than a client may

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"


@contextmanager
def started_services() -> Iterator[Services]:
    """A migrated PostgreSQL database, a MariaDB one and a memcached, gone afterwards."""
    with ExitStack() as stack:
        database_url = started_or_exit(stack, create_postgres_database, drop_postgres_database)
        mariadb_url = started_or_exit(stack, create_mariadb_database, drop_mariadb_database)
        memcached = started_or_exit(stack, lambda: MemcachedProcess().start(),
                                    MemcachedProcess.kill)
        yield from _migrated(Services(database_url, memcached, Path(), mariadb_url))


def _migrated(services: Services) -> Iterator[Services]:
    logs = Path(tempfile.mkdtemp(prefix="bench-http-logs-"))
    try:
        run_alembic(services.database_url, ("upgrade", "head"))
        run_alembic(services.mariadb_url, ("upgrade", "head"))
        yield replace(services, logs=logs)
    except BaseException:
        print(f"The servers' logs are kept in {logs}", file=sys.stderr, flush=True)
        raise
    else:
        shutil.rmtree(logs, ignore_errors=True)


def app_server(services: Services, kind: str, cache: bool, workers: int | None,
               name: str = "") -> Server:
    """The app under `kind` (hypercorn as in production, or uvicorn, or granian)."""
    port = free_port()
    name = name or f"{kind}-cache-{'on' if cache else 'off'}"
    if kind == "hypercorn":
        argv = [str(BIN / "hypercorn"), "--config", "hypercorn.toml",
                "--bind", f"127.0.0.1:{port}"]
        argv += ["--workers", str(workers)] if workers else []
        argv.append("app:create_app()")
    elif kind == "uvicorn":
        argv = [str(BIN / "uvicorn"), "--factory", "app:create_app", "--workers", "2",
                "--loop", "uvloop", "--host", "127.0.0.1", "--port", str(port)]
    elif kind == "granian":
        argv = [str(BIN / "granian"), "--interface", "asgi", "--factory", "--workers", "2",
                "--host", "127.0.0.1", "--port", str(port), "app:create_app"]
    else:
        raise ValueError(f"unknown server {kind!r}")
    return Server(name, argv, port, services.app_env(cache), services.log(name))


def baseline_server(services: Services, app: str, loop: str) -> Server:
    """A bench/baselines.py app under hypercorn's defaults, 2 workers, `loop` worker class."""
    port = free_port()
    argv = [str(BIN / "hypercorn"), "--workers", "2", "--bind", f"127.0.0.1:{port}"]
    argv += ["--worker-class", loop] if loop != "asyncio" else []
    argv.append(f"bench.baselines:{app}")
    env = {"BENCH_MEMCACHED": services.memcached.address}
    return Server(f"{app}-{loop}", argv, port, env, services.log(f"{app}-{loop}"),
                  ready_path="/")


def seed(database_url: str, count: int) -> None:
    """Exactly `count` tasks, ids 1..count (straight SQL: flush the cache after)."""
    now = datetime.now(UTC)
    rows = [{"name": f"Task number {i}: buy milk, call Bob", "done": i % 3 == 0,
             "created_at": now, "updated_at": now} for i in range(1, count + 1)]

    async def insert_all() -> None:
        engine = create_async_engine(database_url)
        try:
            async with engine.begin() as connection:
                if connection.dialect.name == "mysql":
                    await connection.execute(text("TRUNCATE TABLE task"))
                else:
                    await connection.execute(text("TRUNCATE task RESTART IDENTITY"))
                if rows:
                    await connection.execute(insert(TASK), rows)
        finally:
            await engine.dispose()

    asyncio.run(insert_all())


def dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(False)


PACKAGES = ("hypercorn", "quart", "sqlalchemy", "asyncpg", "asyncmy", "uvloop", "aiomcache",
            "httpx", "uvicorn", "granian")


def versions(database_url: str, mariadb_url: str) -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        done = subprocess.run(argv, capture_output=True, text=True)
        return (done.stdout or done.stderr).strip().splitlines()[0]

    return {"python": platform.python_version(),
            **{p: version(p) for p in PACKAGES},
            "memcached": first_line([MEMCACHED, "-V"]).removeprefix("memcached "),
            "postgres": asyncio.run(postgres_version(database_url)),
            "mariadb": asyncio.run(mariadb_version(mariadb_url)),
            "wrk": first_line([WRK, "-v"]).split()[1]}


async def mariadb_version(database_url: str) -> str:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            return str(await connection.scalar(text("SELECT VERSION()"))).split("-")[0]
    finally:
        await engine.dispose()


async def postgres_version(database_url: str) -> str:
    connection = await asyncpg.connect(dsn(database_url))
    try:
        return str(await connection.fetchval("SHOW server_version")).split()[0]
    finally:
        await connection.close()


def production_config() -> dict[str, Any]:
    with (ROOT / "hypercorn.toml").open("rb") as config:
        return tomllib.load(config)

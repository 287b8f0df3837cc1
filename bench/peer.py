"""The MemCachier tutorial app (`../shared/peers/tutorial`) as a benchmark peer.

Run from where it is, never copied: its `setup.sh` makes (or finds) its Python 3.11
virtualenv and migrates a database of its own on the benchmark's PostgreSQL; its `serve.sh`
runs it under gunicorn (sync workers) as its Procfile does. Its table is `task(id serial,
name text)`, seeded here with the same tasks as the app's (`seed`), and it reads
`DATABASE_URL` as a psycopg2 URL (`postgresql://...`).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from bench.harness import Server
from tests.support.databases import POSTGRES_ADMIN_URL

DEFAULT_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "peers" / "tutorial"
DEFAULT_VENV = Path.home() / ".cache" / "tasklist-peer" / "venv-flask"
TASK_NAME = "Task number {i}: buy milk, call Bob"  # as bench/http_servers.py seeds the app
PACKAGES = ("Flask", "Flask-Caching", "Flask-SQLAlchemy", "SQLAlchemy", "gunicorn", "pylibmc",
            "psycopg2-binary")
SETUP_TIMEOUT = 900  # seconds: a first setup installs the tutorial's packages


@dataclass(frozen=True)
class Peer:
    """The tutorial checked out in `directory`, with its virtualenv `venv` and its database
    `database_url` (psycopg2 form)."""

    directory: Path
    venv: Path
    database_url: str

    def server(self, port: int, memcached: str, mode: str, workers: int, log: Path,
               database_url: str | None = None) -> Server:
        """The tutorial under gunicorn: `mode` is "cache" or "nocache" (Flask-Caching's
        null cache); `database_url` and `memcached` may point at a delay proxy."""
        argv = [str(self.directory / "serve.sh"), str(self.venv), str(port),
                database_url or self.database_url, memcached, mode, str(workers)]
        return Server(f"peer-{mode}", argv, port, {}, log, ready_path="/",
                      cwd=self.directory)

    def versions(self) -> dict[str, str]:
        """The versions of its Python and main packages, from its virtualenv."""
        code = ("import json, platform; from importlib.metadata import version; "
                f"print(json.dumps({{'python': platform.python_version(), "
                f"**{{p: version(p) for p in {PACKAGES!r}}}}}))")
        done = subprocess.run([str(self.venv / "bin" / "python"), "-c", code],
                              capture_output=True, text=True)
        return json.loads(done.stdout) if done.returncode == 0 else {}

    def seed(self, count: int) -> None:
        """Exactly `count` tasks, ids 1..count, named as the app's are (flush the cache after)."""
        asyncio.run(seed(self.database_url, count))


def database_on(server_url: str, name: str) -> str:
    """The psycopg2 URL of database `name` on the PostgreSQL server of `server_url`."""
    url = make_url(server_url).set(drivername="postgresql", database=name)
    return url.render_as_string(hide_password=False)


def setup(directory: Path, venv: Path, database_url: str) -> Path:
    """Run the tutorial's `setup.sh VENV DATABASE_URL` (which creates the database if missing
    and migrates it); the virtualenv's path, which it prints last."""
    script = directory / "setup.sh"
    if not script.exists():
        raise FileNotFoundError(f"{script} is missing: is {directory} the tutorial peer?")
    done = subprocess.run([str(script), str(venv), database_url], capture_output=True,
                          text=True, timeout=SETUP_TIMEOUT)
    if done.returncode != 0:
        raise RuntimeError(f"{script} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


@contextmanager
def prepared(directory: Path = DEFAULT_DIR, venv: Path = DEFAULT_VENV) -> Iterator[Peer]:
    """The tutorial set up on a fresh database (`bench_peer_<hex>` on the tests' PostgreSQL),
    dropped afterwards."""
    database_url = database_on(POSTGRES_ADMIN_URL, f"bench_peer_{secrets.token_hex(5)}")
    try:
        venv = setup(directory.resolve(), venv, database_url)
        yield Peer(directory.resolve(), venv, database_url)
    finally:
        asyncio.run(drop_database(database_url))


async def seed(database_url: str, count: int) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        async with connection.transaction():
            await connection.execute("TRUNCATE task RESTART IDENTITY")
            await connection.executemany("INSERT INTO task (name) VALUES ($1)",
                                         [(TASK_NAME.format(i=i),) for i in range(1, count + 1)])
    finally:
        await connection.close()


async def drop_database(database_url: str) -> None:
    name = make_url(database_url).database
    admin_url = make_url(POSTGRES_ADMIN_URL)
    admin = await asyncpg.connect(database_on(POSTGRES_ADMIN_URL, admin_url.database or ""))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()

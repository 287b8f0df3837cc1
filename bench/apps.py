"""The two apps of the side-by-side and what they share: this app (a checkout of it) and the
MemCachier tutorial, on one PostgreSQL and one memcached, reached directly or through a
delay proxy (each server is given the addresses it connects to).

`started(checkout, peer_dir, peer_venv)` makes the run's services: a fresh database for
each app (this app's migrated by the checkout's Alembic, the tutorial's by its setup.sh) on
the tests' PostgreSQL, one memcached, a log directory; all gone afterwards (the logs kept
if the run failed).
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from bench import peer as peers
from bench.checkout import Checkout
from bench.harness import Server, started_or_exit
from bench.peer import TASK_NAME, Peer
from tests.support.databases import create_postgres_database, drop_postgres_database
from tests.support.memcached import MemcachedProcess, free_port

OURS, PEER = "this app", "tutorial"


@dataclass
class Services:
    """What both apps share in a run, and how to serve each on given addresses."""

    checkout: Checkout
    database_url: str  # this app's, postgresql+asyncpg://
    memcached: MemcachedProcess
    peer: Peer | None
    logs: Path
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def postgres(self) -> str:
        """HOST:PORT of the PostgreSQL server (both apps' databases are on it)."""
        url = make_url(self.database_url)
        return f"{url.host or '127.0.0.1'}:{url.port or 5432}"

    def ours(self, name: str, cache: bool, *, postgres: str | None = None,
             memcached: str | None = None, workers: int | None = None) -> Server:
        """This app as production serves it (`hypercorn --config hypercorn.toml`, its 2
        workers unless `workers`), connecting to `postgres` and `memcached` (HOST:PORT;
        default: the servers themselves)."""
        env = {"APP_ENV": "production", "SECRET_KEY": self.secret_key,
               "DATABASE_URL": at(self.database_url, postgres or self.postgres),
               "MEMCACHIER_SERVERS": memcached or self.memcached.address,
               "CACHE_ENABLED": "1" if cache else "0",
               "WRITE_RATE_LIMIT": "0"}  # the loops write far more than a client may
        return self.checkout.server(name, free_port(), env, self.log(name), workers)

    def tutorial(self, name: str, cache: bool, *, postgres: str | None = None,
                 memcached: str | None = None, workers: int = 2) -> Server:
        """The tutorial under gunicorn (`cache` or `nocache` mode), likewise."""
        assert self.peer is not None, "no peer in this run"
        return self.peer.server(free_port(), memcached or self.memcached.address,
                                "cache" if cache else "nocache", workers, self.log(name),
                                database_url=at(self.peer.database_url,
                                                postgres or self.postgres))

    def seed(self, count: int) -> None:
        """Both tables hold the same `count` tasks, ids 1..count; memcached is flushed."""
        asyncio.run(seed_ours(self.database_url, count))
        if self.peer is not None:
            self.peer.seed(count)
        self.memcached.flush()

    def seed_one(self, app: str, count: int) -> None:
        """One app's table re-seeded, memcached flushed."""
        if app == OURS:
            asyncio.run(seed_ours(self.database_url, count))
        else:
            assert self.peer is not None
            self.peer.seed(count)
        self.memcached.flush()

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"


def at(database_url: str, host_port: str) -> str:
    """`database_url` with its host and port replaced (to go through a proxy)."""
    host, _, port = host_port.rpartition(":")
    return make_url(database_url).set(host=host, port=int(port)).render_as_string(False)


async def seed_ours(database_url: str, count: int) -> None:
    """As bench/http_servers.py's `seed`, in plain SQL (so that any checkout's schema of
    the task table takes it): the same names, every third task done."""
    now = datetime.now(UTC)
    url = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    connection = await asyncpg.connect(url)
    try:
        async with connection.transaction():
            await connection.execute("TRUNCATE task RESTART IDENTITY")
            await connection.executemany(
                "INSERT INTO task (name, done, created_at, updated_at) VALUES ($1, $2, $3, $3)",
                [(TASK_NAME.format(i=i), i % 3 == 0, now) for i in range(1, count + 1)])
    finally:
        await connection.close()


@contextmanager
def started(checkout: Checkout, peer_dir: Path | None,
            peer_venv: Path = peers.DEFAULT_VENV) -> Iterator[Services]:
    """The run's databases, memcached and log directory (the tutorial's part only if
    `peer_dir`)."""
    with ExitStack() as stack:
        database_url = started_or_exit(stack, create_postgres_database, drop_postgres_database)
        memcached = started_or_exit(stack, lambda: MemcachedProcess().start(),
                                    MemcachedProcess.kill)
        checkout.migrate(database_url)
        peer = stack.enter_context(peers.prepared(peer_dir, peer_venv)) if peer_dir else None
        logs = Path(tempfile.mkdtemp(prefix="bench-side-by-side-logs-"))
        try:
            yield Services(checkout, database_url, memcached, peer, logs)
        except BaseException:
            print(f"The servers' logs are kept in {logs}", file=sys.stderr, flush=True)
            raise
        shutil.rmtree(logs, ignore_errors=True)

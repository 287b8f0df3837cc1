"""App processes as a scaled-out deploy runs them: `hypercorn 'app:create_app()'` processes
sharing a fresh, migrated PostgreSQL database and memcached servers, configured by the
environment only. Gone afterwards."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.databases import create_postgres_database, drop_postgres_database, run_alembic
from tests.support.memcached import MemcachedProcess
from tests.support.servers import LiveServer


@dataclass
class Cluster:
    env: dict[str, str]
    logs: Path
    memcached: tuple[MemcachedProcess, ...]
    servers: tuple[LiveServer, ...]

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(server.url for server in self.servers)

    def another(self, name: str) -> LiveServer:
        return LiveServer(self.env, log=self.logs / f"server-{name}.log")


@contextmanager
def cluster(
    logs: Path,
    env: Mapping[str, str],
    *,
    processes: int = 2,
    memcached: int = 2,
    command: str | None = None,
) -> Iterator[Cluster]:
    """`processes` app processes with `env` on top of the shared database and servers;
    `command`: a deploy's serving command line instead of plain hypercorn (`LiveServer`)."""
    url = create_postgres_database()
    caches: list[MemcachedProcess] = []
    servers: list[LiveServer] = []
    try:
        run_alembic(url, ("upgrade", "head"))
        caches += [MemcachedProcess().start() for _ in range(memcached)]
        shared = {
            "APP_ENV": "development",
            "DATABASE_URL": url,
            "MEMCACHIER_SERVERS": ",".join(m.address for m in caches),
            **env,
        }
        for n in range(processes):
            server = LiveServer(shared, log=logs / f"server-{n}.log", command=command)
            servers.append(server.start())
        yield Cluster(shared, logs, tuple(caches), tuple(servers))
    finally:
        for server in servers:
            server.stop()
        for process in caches:
            process.kill()
        drop_postgres_database(url)

"""What production runs, on one machine: the Dockerfile's CMD with the image's environment
(`python -m app.serve`, two workers), a PostgreSQL of its own (so that it can be stopped
without touching the machine's shared server) and two memcached servers.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from tests.chaos.partition import WorkerPartition
from tests.support.databases import run_alembic
from tests.support.deploy import image_command, image_environment
from tests.support.memcached import MemcachedProcess
from tests.support.private_postgres import PrivatePostgres
from tests.support.servers import LiveServer

WORKERS = 2
APP = "app:create_app()"  # the application path in the image's command line
SEED_PREFIX = "seed-"


class Memcached(MemcachedProcess):
    """A memcached that can also be frozen (SIGSTOP) and thawed (SIGCONT)."""

    def send_signal(self, signum: int) -> None:
        assert self._proc is not None and self.running, "memcached is not running"
        os.kill(self._proc.pid, signum)


@dataclass(frozen=True)
class SeededTask:
    id: int
    name: str
    done: bool


@dataclass
class Stack:
    postgres: PrivatePostgres
    memcached: tuple[Memcached, Memcached]
    app: LiveServer
    partition: WorkerPartition | None = None

    @property
    def url(self) -> str:
        return self.app.url

    def workers(self) -> list[int]:
        return workers_of(self.app.pid)

    def log_size(self) -> int:
        return self.app.log.stat().st_size

    def serving(self, pid: int, since: int) -> bool:
        """Whether worker `pid` has said it is serving, in the app's log after byte `since`
        (hypercorn's "[pid] [INFO] Running on" line)."""
        with self.app.log.open("rb") as log:
            log.seek(since)
            return f"[{pid}] [INFO] Running on ".encode() in log.read()

    def connections(self) -> dict[int, int]:
        """The client connections each worker holds: its sockets that are established TCP
        connections to the app's port (/proc/net/tcp), i.e. who serves the keep-alive
        clients."""
        port = f":{self.app.port:04X}"
        established = set()
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(port) and fields[3] == "01":  # local address, ESTABLISHED
                established.add(f"socket:[{fields[9]}]")
        held = {}
        for pid in self.workers():
            held[pid] = 0
            for fd in Path(f"/proc/{pid}/fd").glob("*"):
                try:
                    held[pid] += os.readlink(fd) in established
                except OSError:
                    continue
        return held

    def ages_s(self) -> dict[int, float]:
        """How long each worker has been running, in seconds."""
        ticks = os.sysconf("SC_CLK_TCK")
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        ages = {}
        for pid in self.workers():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ages[pid] = round(uptime - int(fields[19]) / ticks, 1)  # field 22: starttime
        return ages

    def rss_kib(self) -> dict[int, int]:
        """Resident set size of each worker, in KiB (VmRSS)."""
        sizes = {}
        for pid in self.workers():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    sizes[pid] = int(line.split()[1])
        return sizes


def workers_of(master: int | None) -> list[int]:
    """The master's live worker processes: its children that multiprocessing spawned (not
    its resource tracker), read from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == master and fields[0] != "Z" and b"spawn_main" in command:
            found.append(int(entry.name))
    return sorted(found)


@contextmanager
def production_stack(
    logs: Path, seed: int, *, app: str = APP, env: Mapping[str, str] | None = None,
    partitionable: bool = False,
) -> Iterator[tuple[Stack, list[SeededTask]]]:
    """Start everything (PostgreSQL migrated and holding `seed` tasks), yield, stop it all.

    `app` and `env` are for diagnostic tools (bench/rss_probe.py): another application path
    in the same command line, and variables on top of the image's environment.
    `partitionable`: the workers reach memcached through a `WorkerPartition`."""
    with ExitStack() as stack:
        postgres = PrivatePostgres()
        stack.callback(postgres.destroy)
        postgres.init().start()
        run_alembic(postgres.url, ("upgrade", "head"))
        seeded = asyncio.run(seed_tasks(postgres.dsn, seed))
        memcached = (Memcached(), Memcached())
        for server in memcached:
            stack.callback(server.kill)
            server.start()
        addresses = [server.address for server in memcached]
        partition = None
        if partitionable:
            partition = WorkerPartition(addresses).start()
            stack.callback(partition.stop)
            addresses = partition.addresses
        command = image_command()
        assert command[:2] == ["sh", "-c"] and f"'{APP}'" in command[2], command
        environment = {
            **image_environment(),
            "SECRET_KEY": secrets.token_urlsafe(32),
            "DATABASE_URL": postgres.url,
            "MEMCACHIER_SERVERS": ",".join(addresses),
            "WEB_CONCURRENCY": str(WORKERS),
            **(env or {}),
        }
        app_server = LiveServer(environment, log=logs / "app.log",
                                command=command[2].replace(f"'{APP}'", f"'{app}'"))
        stack.callback(app_server.stop)
        app_server.start()
        yield Stack(postgres, memcached, app_server, partition), seeded


async def seed_tasks(dsn: str, count: int) -> list[SeededTask]:
    """`count` tasks straight into the table, before the app (and its cache) starts."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "INSERT INTO task (name, done) SELECT $1 || lpad(i::text, 5, '0'), i % 4 = 0 "
            "FROM generate_series(1, $2::int) AS i RETURNING id, name, done",
            SEED_PREFIX, count,
        )
    finally:
        await connection.close()
    return [SeededTask(row["id"], row["name"], row["done"]) for row in rows]


async def stored_tasks(dsn: str) -> list[tuple[int, str, bool]]:
    """Every row of the task table, read straight from PostgreSQL."""
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch("SELECT id, name, done FROM task ORDER BY id")
    finally:
        await connection.close()
    return [(row["id"], row["name"], row["done"]) for row in rows]

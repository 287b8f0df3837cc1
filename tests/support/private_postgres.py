"""A private PostgreSQL server that a test may stop and start: its own data directory and
port, for faults that would take down every other test on the shared server.

    with PrivatePostgres() as pg:  # initdb, then start
        pg.url                     # postgresql+asyncpg://postgres@127.0.0.1:PORT/postgres
        pg.stop()                  # pg_ctl stop -m fast: the app sees an admin shutdown
        pg.start()                 # the same data and port again

It is built with Debian's server binaries (`/usr/lib/postgresql/<version>/bin`). initdb and
the server refuse to run as root, so as root every command runs as the `postgres` user
(`runuser`), in a temporary directory that user owns (outside the test's own temporary
directory, which only root may enter). Built for speed, not durability: trust
authentication, no fsync, no synchronous commit; nothing here needs to survive a crash.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.memcached import free_port

SERVER_USER = "postgres"
START_TIMEOUT = 30


class PostgresUnavailable(RuntimeError):
    """No server binaries, or initdb or the server failed; the message says which."""


def server_binaries() -> Path:
    """The newest installed `/usr/lib/postgresql/<version>/bin` that has initdb."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise PostgresUnavailable(
            "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin: "
            "apt-get install postgresql"
        )
    return candidates[-1].parent


class PrivatePostgres:
    """One postmaster on 127.0.0.1:`port` over a fresh cluster in a temporary directory."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.bin = server_binaries()
        self._as_server_user = os.geteuid() == 0
        self.directory = Path(tempfile.mkdtemp(prefix="tasklist-postgres-"))
        self.data = self.directory / "data"
        self.logfile = self.directory / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    @property
    def dsn(self) -> str:
        """The same server for asyncpg or libpq, without SQLAlchemy's driver name."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> PrivatePostgres:
        if self._as_server_user:
            user = pwd.getpwnam(SERVER_USER)
            os.chown(self.directory, user.pw_uid, user.pw_gid)
        self._run(
            "initdb", "--pgdata", str(self.data), "--username", "postgres", "--auth", "trust",
            "--encoding", "UTF8", "--locale", "C", "--no-sync",
        )
        return self

    def start(self) -> PrivatePostgres:
        """Start the server and wait until it accepts connections."""
        options = " ".join(
            (
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.directory}",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
            )
        )
        self._run(
            "pg_ctl", "start", "--pgdata", str(self.data), "--log", str(self.logfile),
            "--wait", f"--timeout={START_TIMEOUT}", "--options", options,
        )
        return self

    def stop(self) -> None:
        """`pg_ctl stop -m fast`: sessions are ended (clients get "terminating connection
        due to administrator command"), new connections refused until `start`."""
        self._run("pg_ctl", "stop", "--pgdata", str(self.data), "--mode", "fast", "--wait")

    @property
    def running(self) -> bool:
        status = subprocess.run(
            self._argv("pg_ctl", "status", "--pgdata", str(self.data)), capture_output=True
        )
        return status.returncode == 0

    def destroy(self) -> None:
        """Stop the server if it runs, and remove its files."""
        if self.data.exists() and self.running:
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def log_text(self, tail: int = 5000) -> str:
        try:
            return self.logfile.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return "(no log)"

    def _argv(self, program: str, *args: str) -> list[str]:
        argv = [str(self.bin / program), *args]
        return ["runuser", "-u", SERVER_USER, "--", *argv] if self._as_server_user else argv

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            self._argv(program, *args), capture_output=True, text=True, cwd=self.directory
        )
        if done.returncode != 0:
            raise PostgresUnavailable(
                f"{program} {' '.join(args[:2])} failed ({done.returncode}):\n"
                f"{done.stdout}{done.stderr}\n{self.log_text()}"
            )

    def __enter__(self) -> PrivatePostgres:
        return self.init().start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

"""A live app server for tests and benchmarks: `hypercorn 'app:create_app()'` in a
subprocess on a free port, configured by the environment only (as a deploy runs it).

    server = LiveServer({"APP_ENV": "development", "DATABASE_URL": url}, log=tmp / "a.log")
    server.start()          # waits until /healthz answers, or fails with the server's log
    ...server.url...
    server.stop()           # terminate, then kill

Plain helper, no pytest fixtures: the tests own the lifetimes (the benchmarks start their own).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from app.settings import PROJECT_ROOT
from tests.support.databases import create_postgres_database, drop_postgres_database, run_alembic
from tests.support.memcached import MemcachedProcess, free_port

HYPERCORN = Path(sys.executable).with_name("hypercorn")
START_TIMEOUT = 20.0
# For httpx clients of these servers. httpx keeps an idle connection 5 s by default, exactly
# hypercorn's keep_alive_timeout (hypercorn.toml): a request sent just as the server closes
# that connection gets no answer ('Server disconnected without sending a response'). A
# browser retries such a request; these clients drop idle connections sooner instead.
CLIENT_LIMITS = httpx.Limits(keepalive_expiry=2.0)


class ServerFailed(RuntimeError):
    """The server exited or did not answer /healthz in time; the message holds its log."""


class LiveServer:
    """One hypercorn process serving `app:create_app()` on 127.0.0.1.

    `env` is added to a copy of this process's environment from which every variable the
    app reads (`DATABASE_URL`, `MEMCACHIER_*`, `CACHE_*`, ...) has been removed first, so
    nothing leaks in from the caller's shell or `.env`-like settings.
    """

    APP_VARIABLES = (
        "DATABASE_URL", "MEMCACHIER_", "CACHE_", "APP_ENV", "SECRET_KEY", "DB_", "LOG_",
        "INVALIDATION_", "RDS_", "WRITE_RATE_LIMIT", "OPERATOR_TOKEN", "FORWARDED_ALLOW_IPS",
    )

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        log: Path,
        port: int | None = None,
        workers: int = 1,
        extra_args: Sequence[str] = (),
        command: str | None = None,
    ) -> None:
        """`command`: a shell command line to run instead of plain hypercorn, as a deploy
        runs it (the Dockerfile's CMD, the Procfile's `web:` line): it gets `PORT`, and
        finds `.venv/bin` first on `PATH` (where the image has its own venv)."""
        self.port = port or free_port()
        self.command = command
        self.log = log
        self.workers = workers
        self.extra_args = tuple(extra_args)
        base = {
            k: v for k, v in os.environ.items() if not k.startswith(self.APP_VARIABLES)
        }
        # No write limit unless `env` sets one: tests and benchmarks write in loops.
        self.env = {**base, "APP_ENV": "development", "WRITE_RATE_LIMIT": "0", **env}
        if command is not None:
            path = f"{HYPERCORN.parent}{os.pathsep}{self.env.get('PATH', '')}"
            self.env.update(PORT=str(self.port), PATH=path)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = START_TIMEOUT) -> LiveServer:
        if not HYPERCORN.exists():
            raise ServerFailed(f"{HYPERCORN} is missing: run `make test` to create .venv")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        if self.command is not None:
            args = ["sh", "-c", self.command, *self.extra_args]
        else:
            args = [str(HYPERCORN), "app:create_app()", "--bind", f"127.0.0.1:{self.port}"]
            if self.workers != 1:
                args += ["--workers", str(self.workers)]
            args += self.extra_args
        with self.log.open("ab") as sink:
            self._proc = subprocess.Popen(
                args, cwd=PROJECT_ROOT, env=self.env, stdout=sink, stderr=subprocess.STDOUT
            )
        try:
            self._wait_until_up(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_up(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise ServerFailed(
                    f"hypercorn on port {self.port} exited with {self._proc.returncode}:\n"
                    f"{self.log_text()}"
                )
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise ServerFailed(
            f"hypercorn on port {self.port} did not answer /healthz within {timeout:.0f} s:\n"
            f"{self.log_text()}"
        )

    def send_signal(self, signum: int) -> None:
        assert self._proc is not None, "the server is not running"
        self._proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """The exit status, once the server has exited (within `timeout` seconds)."""
        assert self._proc is not None, "the server was not started"
        return self._proc.wait(timeout=timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (hypercorn shuts down gracefully, running `after_serving`), then SIGKILL."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def log_text(self, tail: int = 20_000) -> str:
        try:
            return self.log.read_text(errors="replace")[-tail:]
        except FileNotFoundError:
            return "(no log)"

    def __enter__(self) -> LiveServer:
        return self.start() if not self.running else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextmanager
def served_on_postgres(log: Path) -> Iterator[tuple[LiveServer, str]]:
    """hypercorn as production configures it (hypercorn.toml, one worker) on a fresh,
    migrated PostgreSQL database and a memcached of its own; yields the server and the
    database's URL. Everything is gone afterwards."""
    url = create_postgres_database()
    memcached = MemcachedProcess()
    try:
        run_alembic(url, ("upgrade", "head"))
        memcached.start()
        env = {"DATABASE_URL": url, "MEMCACHIER_SERVERS": memcached.address}
        config = ["--config", str(PROJECT_ROOT / "hypercorn.toml"), "--workers", "1"]
        with LiveServer(env, log=log, extra_args=config) as server:
            yield server, url
    finally:
        memcached.kill()
        drop_postgres_database(url)

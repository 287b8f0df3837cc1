"""Real memcached processes for tests: `MemcachedProcess` and the `memcached` /
`memcached_factory` fixtures (use with ``pytest_plugins = ["tests.support.memcached"]``)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.settings import Settings

MEMCACHED = "/usr/bin/memcached"
NOT_INSTALLED = (
    "memcached is not installed: run `make test` (it apt-installs it) "
    "or apt-get install memcached"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]  # an AF_INET address: (host, port)
        return port


def settings_with(database_url: str, server: MemcachedProcess) -> Settings:
    """The app's development settings on `database_url` and `server`, with short cache
    deadlines, so that a test that kills the server waits little."""
    return Settings(
        write_rate_limit=0,
        env="development",
        database_url=database_url,
        memcache_servers=(server.address,),
        cache_op_timeout=0.3,
        cache_connect_timeout=0.5,
        cache_retry_timeout=0.2,
    )


class MemcachedProcess:
    """One memcached on 127.0.0.1 (TCP only); `kill`/`start` keep the same port."""

    def __init__(self, port: int | None = None, *, authfile: Path | None = None,
                 memory_mb: int = 64) -> None:
        if not os.access(MEMCACHED, os.X_OK):
            pytest.fail(NOT_INSTALLED, pytrace=False)
        self.port = port or free_port()
        self.authfile = authfile
        self.memory_mb = memory_mb
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> MemcachedProcess:
        args = [MEMCACHED, "-U", "0", "-l", "127.0.0.1", "-p", str(self.port),
                "-m", str(self.memory_mb), "-t", "1"]
        if os.geteuid() == 0:
            args += ["-u", "root"]
        if self.authfile is not None:
            args += ["-Y", str(self.authfile)]
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                assert self._proc.stderr is not None  # stderr=PIPE
                raise RuntimeError(f"memcached exited: {self._proc.stderr.read().decode()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"version\r\n")
                    if sock.recv(100):  # "VERSION ..." or, with -Y, "CLIENT_ERROR ..."
                        return self
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"memcached did not start on port {self.port}")

    def send_signal(self, signum: int) -> None:
        """Signal the running memcached: SIGSTOP freezes it (its connections stay open and
        nothing is answered), SIGCONT thaws it."""
        assert self._proc is not None and self.running, "memcached is not running"
        os.kill(self._proc.pid, signum)

    def kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def restart(self) -> None:
        self.kill()
        self.start()

    def command(self, line: bytes, auth: bytes | None = None) -> bytes:
        """Send one raw command (after an optional raw auth command); return the reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            if auth is not None:
                sock.sendall(auth)
                sock.recv(100)
            sock.sendall(line)
            return sock.recv(65536)

    def flush(self) -> None:
        if self.authfile is None:
            assert self.command(b"flush_all\r\n") == b"OK\r\n"


@pytest.fixture(scope="session")
def _shared_memcached() -> Iterator[MemcachedProcess]:
    server = MemcachedProcess().start()
    yield server
    server.kill()


@pytest.fixture
def memcached(_shared_memcached: MemcachedProcess) -> MemcachedProcess:
    """A running, empty memcached (shared by the session; restarted if a test killed it)."""
    if not _shared_memcached.running:
        _shared_memcached.start()
    _shared_memcached.flush()
    return _shared_memcached


@pytest.fixture
def memcached_factory() -> Iterator[Callable[..., MemcachedProcess]]:
    """``start(authfile=None, port=None) -> MemcachedProcess``; all killed at teardown."""
    started: list[MemcachedProcess] = []

    def start(port: int | None = None, *, authfile: Path | None = None,
              memory_mb: int = 64) -> MemcachedProcess:
        server = MemcachedProcess(port, authfile=authfile, memory_mb=memory_mb).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest.fixture
def memcached_server(memcached_factory: Callable[..., MemcachedProcess]) -> MemcachedProcess:
    """A memcached of this test's own, to kill or freeze (killed at teardown, stopped or not)."""
    return memcached_factory()

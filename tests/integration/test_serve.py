"""How production serves the app, tried as an operator would: the Dockerfile's CMD (with the
image's environment) and the Procfile's `web:` line (through honcho), both `python -m
app.serve` with the project's hypercorn.toml, on a real PostgreSQL and memcached, driven
over sockets and signals.

- a SIGKILLed worker is replaced while the other one goes on answering;
- SIGTERM lets the request in flight finish, then the master exits 0;
- a stalled header or body is closed by the server within the configured read timeout;
- a refusal to start (no SECRET_KEY, workers that keep dying at start) exits non-zero and
  says why; two workers asked for on the in-process cache serve as one, saying so.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from app.settings import PROJECT_ROOT
from tests.support.databases import create_postgres_database, drop_postgres_database, run_alembic
from tests.support.deploy import image_command, image_environment
from tests.support.memcached import MemcachedProcess
from tests.support.servers import LiveServer

pytestmark = pytest.mark.postgres

CONFIG = tomllib.loads((PROJECT_ROOT / "hypercorn.toml").read_text())
HONCHO = Path(sys.executable).with_name("honcho")
DYING_APP = "tests.support.dying_app:create_app()"
RUNNING = re.compile(r"\[(\d+)\] \[INFO\] Running on ")


@contextmanager
def production_services() -> Iterator[dict[str, str]]:
    """A migrated PostgreSQL database and a memcached server, in the production settings."""
    url = create_postgres_database()
    memcached = MemcachedProcess()
    try:
        run_alembic(url, ("upgrade", "head"))
        memcached.start()
        yield {
            "APP_ENV": "production",
            "SECRET_KEY": "test-serve-secret",
            "DATABASE_URL": url,
            "MEMCACHIER_SERVERS": memcached.address,
        }
    finally:
        memcached.kill()
        drop_postgres_database(url)


@pytest.fixture(scope="module")
def services() -> Iterator[dict[str, str]]:
    with production_services() as env:
        yield env


def image_cmd() -> str:
    """The Dockerfile's CMD, a shell line: `sh -c "exec python -m app.serve ..."`."""
    command = image_command()
    assert command[:2] == ["sh", "-c"]
    return command[2]


def serve(env: dict[str, str], log: Path, workers: int = 2, *, via: str = "image") -> LiveServer:
    """The app as the image runs it (its CMD and ENV), or as a Heroku-style platform runs
    the Procfile's `web:` line (honcho gives it PORT, as the platform does)."""
    env = {**image_environment(), **env, "WEB_CONCURRENCY": str(workers)}
    if via == "image":
        return LiveServer(env, log=log, command=image_cmd())
    assert HONCHO.exists(), "honcho is missing: run `make test` (pyproject's test extra)"
    empty = log.with_suffix(".env")
    empty.write_text("")  # honcho reads .env by default; the test's environment is all
    return LiveServer(env, log=log, command=f"exec {HONCHO} -e {empty} start -p $PORT web")


def workers_of(pid: int) -> set[int]:
    """The live worker processes under `pid`, read from /proc: app.serve's spawned
    children (not multiprocessing's resource tracker), also below honcho's shell."""
    parents: dict[int, int] = {}
    spawned: set[int] = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                command = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            if fields[0] != "Z":
                parents[int(entry.name)] = int(fields[1])
                if b"spawn_main" in command:
                    spawned.add(int(entry.name))

    def descends(child: int) -> bool:
        while child in parents:
            child = parents[child]
            if child == pid:
                return True
        return False

    return {child for child in spawned if descends(child)}


def running_workers(server: LiveServer) -> list[int]:
    """The pids of the workers that have logged "Running on", in order."""
    return [int(pid) for pid in RUNNING.findall(server.log.read_text())]


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - start


# --- a dead worker ---------------------------------------------------------------------------


async def load(url: str, clients: int, stop: asyncio.Event, outcomes: Counter[str]) -> None:
    """`clients` keep-alive clients sending GET / until `stop` is set, counting what they
    get."""

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            while not stop.is_set():
                try:
                    response = await http.get("/")
                    outcomes[str(response.status_code)] += 1
                except httpx.TransportError as error:
                    outcomes[type(error).__name__] += 1

    await asyncio.gather(*(client() for _ in range(clients)))


@pytest.mark.parametrize("via", ["image", "procfile"])
def test_a_killed_worker_is_replaced_while_the_other_serves(
    services: dict[str, str], tmp_path: Path, via: str
) -> None:
    with serve(services, tmp_path / "serve.log", via=via) as server:
        assert server.pid is not None
        wait_for(lambda: len(running_workers(server)) == 2, 10, "two workers running")
        first = set(running_workers(server))
        assert workers_of(server.pid) == first
        clients = 16
        outcomes: Counter[str] = Counter()
        victim = min(first)
        replaced_after: list[float] = []

        async def scenario() -> None:
            stop = asyncio.Event()
            run = asyncio.create_task(load(server.url, clients, stop, outcomes))
            await asyncio.sleep(1.5)
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            while len(set(running_workers(server)) - first) == 0:  # noqa: ASYNC110 - a log
                if time.monotonic() - killed > 10:
                    break  # asserted below, with the log
                await asyncio.sleep(0.05)
            replaced_after.append(time.monotonic() - killed)
            # The load goes on past the replacement (it used to run a fixed 6 s: about as
            # long after it), so the clients that lost their worker reconnect and are served.
            await asyncio.sleep(1.5)
            stop.set()
            await run

        asyncio.run(scenario())
        log = server.log.read_text()
        assert replaced_after and replaced_after[0] < 10, log
        assert f"worker {victim} exited (killed by SIGKILL)" in log
        assert len(workers_of(server.pid)) == 2, log  # full capacity, by itself
        errors = {k: n for k, n in outcomes.items() if not k.isdigit()}
        statuses = {k: n for k, n in outcomes.items() if k.isdigit()}
        assert set(statuses) == {"200"}, outcomes  # never a 5xx
        # Only the requests in flight on the killed worker fail: one per client at most.
        assert sum(errors.values()) <= clients, outcomes
        assert statuses["200"] > 100, outcomes
        # And both workers serve again: a fresh connection lands on either.
        after: Counter[int] = Counter()
        for _ in range(40):
            with httpx.Client(base_url=server.url, timeout=5) as http:
                after[http.get("/healthz").status_code] += 1
        assert after == {200: 40}


# --- graceful shutdown -------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["image", "procfile"])
def test_sigterm_finishes_the_request_in_flight_then_exits_0(
    services: dict[str, str], tmp_path: Path, via: str
) -> None:
    server = serve(services, tmp_path / "serve.log", via=via).start()
    dsn = make_url(services["DATABASE_URL"]).set(drivername="postgresql").render_as_string(False)

    async def scenario() -> httpx.Response:
        lock = await asyncpg.connect(dsn)
        try:
            async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
                locked = lock.transaction()
                await locked.start()
                # The task table is locked, so the POST below waits in the app.
                await lock.execute("LOCK TABLE task IN ACCESS EXCLUSIVE MODE")
                post = asyncio.create_task(
                    http.post("/api/tasks", json={"name": "finished while stopping"})
                )
                await asyncio.sleep(1.0)
                assert not post.done()
                server.send_signal(signal.SIGTERM)
                await asyncio.sleep(1.0)
                assert not post.done(), "the request in flight was cut off"
                await locked.commit()  # the request goes on
                return await asyncio.wait_for(post, 15)
        finally:
            await lock.close()

    try:
        response = asyncio.run(scenario())
        code = server.wait(timeout=CONFIG["graceful_timeout"])
    finally:
        server.stop()
    log = server.log_text()
    assert response.status_code == 201, log
    if via == "image":
        assert code == 0, log
    else:  # honcho itself exits 128 + 15 when signalled; it reports what its process did
        assert "web.1 stopped (rc=0)" in log, log
    assert "SIGTERM: finishing the requests in flight" in log
    assert log.count("closed the database pool and the cache connections") == 2, log

    async def stored() -> list[str]:
        connection = await asyncpg.connect(dsn)
        try:
            return [r["name"] for r in await connection.fetch("SELECT name FROM task")]
        finally:
            await connection.close()

    assert "finished while stopping" in asyncio.run(stored())


# --- a stalled client ----------------------------------------------------------------------------

STALLS = {
    "header": b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: ",
    "body": (
        b"POST /api/tasks HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        b"Content-Length: 20\r\n\r\n" + b'{"name":'
    ),
}


@dataclass
class Stalls:
    server: LiveServer
    total_before: int  # tasks stored before the stalled clients connected
    held: dict[str, Future[float]]  # seconds each connection was held open by the server


def held_open(port: int, start: bytes, timeout: float) -> float:
    """Send `start` and nothing more; how long the server keeps the connection open."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout + 5) as s:
        s.sendall(start)
        began = time.monotonic()
        while s.recv(65536):
            pass  # a 4xx before the close is fine too
        return time.monotonic() - began


@pytest.fixture(scope="module", autouse=True)
def stalls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stalls]:
    """The stalled clients of the test below, connected as the module starts, to a server
    (and database) of their own: they only wait for the server to drop them (up to the
    read timeout, 15 s), so the module's other tests run meanwhile instead of after it."""
    with production_services() as env, ThreadPoolExecutor(len(STALLS)) as pool:
        # The server stops (closing whatever is still held) before the pool waits.
        with serve(env, tmp_path_factory.mktemp("stalls") / "serve.log") as server:
            total_before = httpx.get(server.url + "/api/tasks").json()["total"]
            held = {name: pool.submit(held_open, server.port, start, CONFIG["read_timeout"])
                    for name, start in STALLS.items()}
            yield Stalls(server, total_before, held)


def test_a_stalled_header_or_body_is_closed_within_the_read_timeout(stalls: Stalls) -> None:
    timeout = CONFIG["read_timeout"]
    assert timeout <= 15, "a stalled client must be dropped within seconds"
    for name, held in stalls.held.items():
        seconds = held.result(timeout=timeout + 10)
        # A header is dropped even sooner: until a request is complete, the connection
        # counts as idle and keep_alive_timeout applies too.
        assert seconds <= timeout + 2, f"stalled {name} held {seconds:.1f} s"
    # Nothing was stored from the half-sent body, and the server still serves.
    with httpx.Client(base_url=stalls.server.url) as http:
        assert http.get("/api/tasks").json()["total"] == stalls.total_before
        assert http.get("/healthz").status_code == 200


# --- refusals to start ----------------------------------------------------------------------------


def run_until_exit(env: dict[str, str], workers: int = 2) -> subprocess.CompletedProcess[str]:
    """Run the serving command with `env`; it must exit by itself."""
    server = serve(env, Path(os.devnull), workers)
    assert server.command is not None
    return subprocess.run(
        ["sh", "-c", server.command], env=server.env, cwd=PROJECT_ROOT,
        capture_output=True, text=True, timeout=60,
    )


def test_production_without_secret_key_exits_non_zero_and_names_it(
    services: dict[str, str],
) -> None:
    env = {k: v for k, v in services.items() if k != "SECRET_KEY"}
    result = run_until_exit(env)
    assert result.returncode != 0
    assert "refusing to start: SECRET_KEY is not set" in result.stderr
    assert "Running on" not in result.stderr  # no worker was started, no port taken


def test_two_workers_on_the_in_process_cache_serve_as_one(
    services: dict[str, str], tmp_path: Path
) -> None:
    """The image run with no memcached (`docker run` with a database and a secret only)."""
    env = {k: v for k, v in services.items() if k != "MEMCACHIER_SERVERS"}
    with serve(env, tmp_path / "serve.log", workers=2) as server:
        assert server.pid is not None
        with httpx.Client(base_url=server.url, timeout=5) as http:
            assert http.get("/").status_code == 200
            assert http.get("/readyz").json()["cache"] == "ok"
        log = server.log.read_text()
        said = "serving with 1 worker on the in-process cache, not 2: MEMCACHIER_SERVERS"
        assert said in log, log
        assert len(running_workers(server)) == 1, log
        assert len(workers_of(server.pid)) == 1, log


def test_workers_that_keep_dying_at_start_stop_the_master(services: dict[str, str]) -> None:
    # The app loads in the master, but every worker dies while it starts.
    env = {**services, "TASKLIST_TEST_DIE_IN_WORKERS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    server = serve(env, Path(os.devnull))
    assert server.command is not None and "app:create_app()" in server.command
    result = subprocess.run(
        ["sh", "-c", server.command.replace("app:create_app()", DYING_APP)],
        env=server.env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert "3 workers in a row died before they were ready to serve; stopping" in result.stderr
    assert result.stderr.count("exited (exit code 3)") == 3
    assert result.stderr.count("started") == 4  # two workers, then two in place of the dead


def test_workers_killed_after_their_start_are_always_replaced(
    services: dict[str, str], tmp_path: Path
) -> None:
    # Unlike workers that die before they are ready, these never stop the master.
    with serve(services, tmp_path / "serve.log", workers=1) as server:
        for round_ in range(1, 4):
            (worker,) = running_workers(server)[-1:]
            os.kill(worker, signal.SIGKILL)

            def replaced(started: int = round_ + 1) -> bool:
                return len(running_workers(server)) == started

            wait_for(replaced, 10, "a new worker")
        assert server.running
        assert httpx.get(server.url + "/healthz").status_code == 200

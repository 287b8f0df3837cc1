"""The image the Dockerfile builds, run as a user would run it: migrated with `alembic
upgrade head` in the image, served by its own command with two workers and two memcached
servers, driven over HTTP; its health check, its user, its `stop`, and what it leaves out."""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
import time
from collections.abc import Iterator

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.containers.conftest import Container, run_once, running
from tests.support.databases import create_postgres_database, drop_postgres_database
from tests.support.memcached import MemcachedProcess
from tests.support.podman import podman

pytestmark = [pytest.mark.containers, pytest.mark.postgres]

RUNNING = re.compile(r"\[(\d+)\] \[INFO\] Running on ")
HTMX = {"HX-Request": "true", "HX-Request-Type": "partial"}  # a targeted swap (app/htmx.py)


@pytest.fixture(scope="module")
def production() -> Iterator[dict[str, str]]:
    """A PostgreSQL database migrated by the image itself, and two memcached servers: the
    environment a deploy gives the image."""
    url = create_postgres_database()
    servers = [MemcachedProcess().start() for _ in range(2)]
    try:
        yield {
            "DATABASE_URL": url,
            "SECRET_KEY": "test-image-secret",
            "MEMCACHIER_SERVERS": ",".join(server.address for server in servers),
        }
    finally:
        for server in servers:
            server.kill()
        drop_postgres_database(url)


@pytest.fixture(scope="module")
def migrated(image: str, production: dict[str, str]) -> dict[str, str]:
    output = run_once(image, production, "alembic", "upgrade", "head").stderr
    assert "Running upgrade" in output, output
    return production


@pytest.fixture(scope="module")
def served(image: str, migrated: dict[str, str]) -> Iterator[Container]:
    with running(image, migrated) as container:
        yield container


def test_the_image_serves_with_two_workers_on_memcached(served: Container) -> None:
    deadline = time.monotonic() + 15  # /healthz answers once the first worker runs
    while len(RUNNING.findall(served.logs())) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(RUNNING.findall(served.logs())) == 2, served.logs()


def test_list_form_api_and_htmx_fragment_against_postgres(served: Container) -> None:
    with httpx.Client(base_url=served.url, timeout=10) as http:
        assert http.get("/").status_code == 200
        form = http.post("/", data={"name": "added through the form"})
        assert form.status_code == 303 and form.headers["location"].endswith("/")
        api = http.post("/api/tasks", json={"name": "added through the API"})
        assert api.status_code == 201, api.text
        names = {task["name"] for task in http.get("/api/tasks").json()["items"]}
        assert {"added through the form", "added through the API"} <= names
        page = http.get("/")
        assert "added through the form" in page.text and "added through the API" in page.text
        assert page.text.lstrip().lower().startswith("<!doctype html>")
        fragment = http.post("/", data={"name": "added with htmx"}, headers=HTMX)
        assert fragment.status_code == 200, fragment.text
        assert "added with htmx" in fragment.text and "<html" not in fragment.text.lower()
        ready = {"status": "ok", "database": "ok", "cache": "ok", "write_limit": "ok"}
        assert http.get("/readyz").json() == ready


def test_it_runs_as_a_non_root_user(served: Container) -> None:
    users = podman("top", served.name, "user", "huser").stdout.split("\n")[1:]
    processes = [line.split() for line in users if line.strip()]
    assert len(processes) >= 3, users  # the master and its two workers
    assert {tuple(process) for process in processes} == {("app", "10001")}, processes


def test_its_healthcheck_command_passes(served: Container) -> None:
    result = podman("healthcheck", "run", served.name, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert podman("inspect", served.name, "--format", "{{.State.Health.Status}}").stdout.strip() \
        == "healthy"


def test_it_holds_no_compiler_no_nodejs_and_no_test_code(image: str) -> None:
    listing = run_once(
        image, {}, "sh", "-c",
        "command -v gcc cc c++ make node npm; ls /srv; ls /opt/venv/lib/python3*/site-packages",
    ).stdout
    lines = set(listing.split())
    assert {"alembic", "app", "static", "templates"} <= lines, listing
    assert not {line for line in lines if line.startswith("/")}, "a compiler or Node.js"
    assert not lines & {"tests", "bench", "docs", ".git", "node_modules"}, listing
    tools = {"pytest", "mypy", "ruff", "schemathesis", "hypothesis", "pyinstrument"}
    assert not {line.split("-")[0] for line in lines} & tools, listing


def test_stop_drains_the_request_in_flight_and_exits_0(
    image: str, migrated: dict[str, str]
) -> None:
    dsn = make_url(migrated["DATABASE_URL"]).set(drivername="postgresql")

    async def scenario(container: Container) -> tuple[httpx.Response, int]:
        lock = await asyncpg.connect(dsn.render_as_string(hide_password=False))
        try:
            transaction = lock.transaction()
            await transaction.start()
            # The task table is locked, so the POST below waits in the app.
            await lock.execute("LOCK TABLE task IN ACCESS EXCLUSIVE MODE")
            async with httpx.AsyncClient(base_url=container.url, timeout=30) as http:
                post = asyncio.create_task(
                    http.post("/api/tasks", json={"name": "finished while stopping"})
                )
                await asyncio.sleep(1.0)
                assert not post.done()
                stopped: list[subprocess.CompletedProcess[str]] = []
                stop = threading.Thread(
                    target=lambda: stopped.append(podman("stop", container.name, timeout=60))
                )
                stop.start()
                await asyncio.sleep(1.5)
                assert not post.done(), "the request in flight was cut off"
                await transaction.commit()  # the request goes on
                response = await asyncio.wait_for(post, 20)
                await asyncio.to_thread(stop.join, 60)
                assert stopped, "podman stop did not return"
            return response, await lock.fetchval(
                "SELECT count(*) FROM task WHERE name = 'finished while stopping'"
            )
        finally:
            await lock.close()

    with running(image, migrated) as container:
        response, stored = asyncio.run(scenario(container))
        log = container.logs()
        assert response.status_code == 201, log
        assert stored == 1
        assert container.state("ExitCode") == "0", log
        assert "SIGTERM: finishing the requests in flight" in log, log


def test_run_with_only_a_database_and_a_secret_serves_one_worker(
    image: str, migrated: dict[str, str]
) -> None:
    """`docker run -e DATABASE_URL=... -e SECRET_KEY=... IMAGE`, as most people first try it:
    no memcached, so one worker on the in-process cache, and the log says why."""
    env = {name: migrated[name] for name in ("DATABASE_URL", "SECRET_KEY")}
    with running(image, env) as container:
        with httpx.Client(base_url=container.url, timeout=10) as http:
            assert http.get("/").status_code == 200
            assert http.post("/api/tasks", json={"name": "on one worker"}).status_code == 201
            assert http.get("/readyz").json()["cache"] == "ok"
        log = container.logs()
        assert "serving with 1 worker on the in-process cache, not 2" in log, log
        assert len(RUNNING.findall(log)) == 1, log

"""A live server (hypercorn in a subprocess, migrated SQLite file) and Debian's Chromium
driven by Playwright's sync API. The tests are sync, so Playwright and pytest-asyncio's
event loop never meet, and the server runs on its own loop in its own process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Response,
    sync_playwright,
)

from app.settings import PROJECT_ROOT
from tests.support.databases import sqlite_url

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
]
OUTPUT = PROJECT_ROOT / "test-output" / "e2e"


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    return OUTPUT


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_up(url: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited with {server.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"the server did not answer {url} within 20 s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory, output_dir: Path) -> Iterator[str]:
    """`hypercorn 'app:create_app()'` on a free port, as `make run` serves it."""
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEMCACHIER_")},
        "APP_ENV": "development",
        "DATABASE_URL": sqlite_url(tmp_path_factory.mktemp("e2e-db")),
        "WRITE_RATE_LIMIT": "0",  # the browser tests write more than a client may
    }
    # In a subprocess, like a deploy: Playwright's sync API may already own this thread's loop.
    alembic = Path(sys.executable).with_name("alembic")
    subprocess.run([str(alembic), "upgrade", "head"], cwd=PROJECT_ROOT, env=env, check=True)
    hypercorn = Path(sys.executable).with_name("hypercorn")
    log = output_dir / "server.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [str(hypercorn), "app:create_app()", "--bind", f"127.0.0.1:{port}"],
            cwd=PROJECT_ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(base + "/healthz", server, log)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def base_url(live_server: str) -> str:
    """The live server with an empty task list (emptied through the JSON API)."""
    while True:
        with urllib.request.urlopen(live_server + "/api/tasks?limit=100") as response:
            tasks = json.load(response)["items"]
        if not tasks:
            return live_server
        for task in tasks:
            url = f"{live_server}/api/tasks/{task['id']}"
            urllib.request.urlopen(urllib.request.Request(url, method="DELETE")).close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (`make test` does it with apt). "
            "Never `playwright install`."
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


def _watched_page(context: BrowserContext, base_url: str, problems: list[str]) -> Page:
    """A page that records console errors (CSP violations among them), uncaught errors,
    failed responses (but the 422 of a refused name and the 410 of a task deleted elsewhere,
    which the page handles) and any request
    that leaves our origin."""
    page = context.new_page()

    def on_console(message: ConsoleMessage) -> None:
        # Chromium also logs every 4xx as an error; those are checked by status below.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            problems.append(f"console: {message.text}")

    def on_response(response: Response) -> None:
        if response.status >= 400 and response.status not in (410, 422):
            problems.append(f"{response.status} for {response.url}")

    page.on("console", on_console)
    page.on("response", on_response)
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "request",
        lambda request: None if request.url.startswith(base_url) else problems.append(
            f"foreign request: {request.url}"
        ),
    )
    return page


@pytest.fixture
def page(browser: Browser, base_url: str) -> Iterator[Page]:
    """JavaScript on. Fails the test on any console error or foreign request."""
    problems: list[str] = []
    context = browser.new_context(base_url=base_url)
    context.set_default_timeout(5000)
    yield _watched_page(context, base_url, problems)
    context.close()
    assert problems == []


@pytest.fixture
def nojs_page(browser: Browser, base_url: str) -> Iterator[Page]:
    """JavaScript off: the forms post, the server redirects, the browser loads the page."""
    problems: list[str] = []
    context = browser.new_context(base_url=base_url, java_script_enabled=False)
    context.set_default_timeout(5000)
    yield _watched_page(context, base_url, problems)
    context.close()
    assert problems == []

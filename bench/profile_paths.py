"""Where the time of one request goes: the app called in process, path by path, under
pyinstrument, against real PostgreSQL and memcached.

    .venv/bin/python bench/profile_paths.py [--tasks 100] [--requests 2000] [--paths ...]
                                            [--html DIR]

The ASGI app is called directly (no socket, no hypercorn), so the profile shows the app's
own cost per request: what `bench/http_benchmark.py` measures over HTTP minus the server.
Prints, for each path, microseconds per request and pyinstrument's call tree (functions
above 2% of the time); `--html DIR` also writes each profile as an HTML page.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

import argparse  # noqa: E402
import asyncio  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402

import asyncpg  # noqa: E402
from pyinstrument import Profiler  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from app import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from tests.support.asgi import asgi_request  # noqa: E402
from tests.support.databases import (  # noqa: E402
    create_postgres_database,
    drop_postgres_database,
    run_alembic,
)
from tests.support.memcached import MemcachedProcess  # noqa: E402

PARTIAL = [(b"hx-request", b"true"), (b"hx-request-type", b"partial")]
# name -> (cache: "off", "on", "flushed" before every request, or "write": a POST of a task
# before every request, timed with it; path; extra request headers)
PATHS: dict[str, tuple[str, str, list[tuple[bytes, bytes]]]] = {
    "uncached GET /": ("off", "/", []),
    "cached GET /": ("on", "/", []),
    "cached GET / gzip": ("on", "/", [(b"accept-encoding", b"gzip")]),
    "uncached GET /api/tasks": ("off", "/api/tasks", []),
    "cached GET /api/tasks": ("on", "/api/tasks", []),
    "uncached htmx GET /": ("off", "/", PARTIAL),
    "cache flushed GET /": ("flushed", "/", []),
    "write then GET /": ("write", "/", []),
}
JSON = [(b"content-type", b"application/json")]


async def call(
    app: Callable, path: str, headers: list[tuple[bytes, bytes]], method: str = "GET",
    body: bytes = b"",
) -> int:
    """One request through the ASGI app; returns the status."""
    return (await asgi_request(app, method, path, headers, body)).status


async def seed(dsn: str, count: int) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("TRUNCATE task RESTART IDENTITY")
        await connection.executemany(
            "INSERT INTO task (name, done, created_at, updated_at) VALUES ($1, $2, now(), now())",
            [(f"Task number {i}: buy milk, call Bob", i % 3 == 0) for i in range(1, count + 1)],
        )
    finally:
        await connection.close()


async def profile_path(
    name: str, database_url: str, memcached: MemcachedProcess, requests: int
) -> tuple[float, Profiler]:
    """Seconds per request (timed without the profiler, whose overhead is large), and a
    profile of as many requests again."""
    cache, path, headers = PATHS[name]
    settings = Settings(
        write_rate_limit=0,
        env="production", secret_key=uuid.uuid4().hex, database_url=database_url,
        memcache_servers=(memcached.address,), cache_enabled=cache != "off",
    )
    flush, write = cache == "flushed", cache == "write"

    async def one() -> None:
        if flush:
            memcached.flush()
        if write:
            await call(app, "/api/tasks", JSON, "POST", b'{"name": "written"}')
        await call(app, path, headers)
    app = create_app(settings)
    await app.startup()
    try:
        for _ in range(20):  # warm: compile templates, fill the caches, open connections
            assert await call(app, path, headers) == 200
        started = time.perf_counter()
        for _ in range(requests):
            await one()
        elapsed = time.perf_counter() - started
        profiler = Profiler(interval=0.0001, async_mode="disabled")
        profiler.start()
        for _ in range(requests):
            await one()
        profiler.stop()
    finally:
        await app.shutdown()
    return elapsed / requests, profiler


def report(name: str, seconds: float, requests: int, profiler: Profiler, html: Path | None) -> None:
    print(f"\n## {name}: {seconds * 1e6:,.0f} us per request ({requests} requests)")
    tree = profiler.output_text(unicode=False, color=False, show_all=False)
    print(tree.split("\n", 3)[-1][:12000])
    if html is not None:
        html.mkdir(parents=True, exist_ok=True)
        slug = name.replace(" ", "_").replace("/", "_")
        (html / f"{slug}.html").write_text(profiler.output_html())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--paths", nargs="*", default=list(PATHS), choices=list(PATHS))
    parser.add_argument("--html", type=Path)
    args = parser.parse_args()
    database_url = create_postgres_database()
    memcached = MemcachedProcess().start()
    try:
        run_alembic(database_url, ("upgrade", "head"))
        dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
        asyncio.run(seed(dsn, args.tasks))
        for name in args.paths:
            memcached.flush()
            seconds, profiler = asyncio.run(
                profile_path(name, database_url, memcached, args.requests)
            )
            report(name, seconds, args.requests, profiler, args.html)
    finally:
        memcached.kill()
        drop_postgres_database(database_url)


if __name__ == "__main__":
    main()

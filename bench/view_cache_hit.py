"""The view cache's hit path in process, for instruction counts under callgrind.

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        .venv/bin/python bench/view_cache_hit.py --requests N [--kind plain|gzip|304]

Serves `GET /` (10 tasks, SQLite, the in-process cache: nothing outside the process) from
the view cache N times after a warm-up. Run it at two values of N and divide the difference
in instructions by the difference in N: the cost of one hit, without start-up. docs/
PERFORMANCE.md, "The view cache in modules: the hit path before and after", has the figures.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

import argparse  # noqa: E402
import asyncio  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402

from app import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from tests.support.asgi import asgi_request  # noqa: E402
from tests.support.databases import run_alembic, sqlite_url  # noqa: E402

JSON = [(b"content-type", b"application/json")]
KINDS = {"plain": [], "gzip": [(b"accept-encoding", b"gzip")]}


async def serve(database_url: str, kind: str, requests: int) -> None:
    settings = Settings(
        env="production", secret_key="x" * 32, database_url=database_url, write_rate_limit=0
    )
    app = create_app(settings)
    await app.startup()
    try:
        for i in range(10):
            body = b'{"name": "Task number %d: buy milk, call Bob"}' % i
            assert (await asgi_request(app, "POST", "/api/tasks", JSON, body)).status == 201
        first = await asgi_request(app, "GET", "/", KINDS.get(kind, []))
        headers = KINDS.get(kind, [(b"if-none-match", first.headers[b"etag"])])
        expected = 304 if kind == "304" else 200
        for _ in range(20):  # warm: the entry stored and kept, the memos filled
            assert (await asgi_request(app, "GET", "/", headers)).status == expected
        for _ in range(requests):
            await asgi_request(app, "GET", "/", headers)
        sent = await asgi_request(app, "GET", "/", headers)
        assert sent.status == expected and sent.headers[b"x-cache"] == b"hit", sent.headers
    finally:
        await app.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--kind", choices=[*KINDS, "304"], default="plain")
    args = parser.parse_args()
    logging.disable(logging.INFO)  # the request log's lines: not the view cache's cost
    with tempfile.TemporaryDirectory() as directory:
        database_url = sqlite_url(Path(directory))
        run_alembic(database_url, ("upgrade", "head"))
        asyncio.run(serve(database_url, args.kind, args.requests))


if __name__ == "__main__":
    main()

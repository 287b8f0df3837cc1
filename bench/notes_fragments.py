"""What the notes fragments buy: a page miss right after one write, with 100 tasks each
holding about 1 KB of Markdown notes, with the fragment cache and without it, beside the
same miss on 100 tasks without notes; then the write-then-read loop over HTTP on such
tasks. Real PostgreSQL and memcached; results rewrite their block in docs/PERFORMANCE.md.

    .venv/bin/python bench/notes_fragments.py [--rounds 300] [--seconds 10] [--clients 8]

Page misses: each app is called in process (ASGI, no socket): per round, for each case in
turn, one write through the API (untimed), then `GET /` (a view-cache miss), timed, with a
pause around it for the background work of the answers before (`settle`). The
cases, interleaved round by round so that the machine's noise spreads over all of them:
- *fragments*: notes, each task's rendered notes a cached fragment; the write changes one
  task's notes, so the miss reads 100 fragments in one round trip and renders one;
- *fragment cache off*: the same, every note rendered on every miss (the view cache on);
- *no notes*: 100 tasks without notes; the write renames one.
Loop: `bench/write_read.py`'s clients against one hypercorn process, each adding a task
(with 1 KB of notes, or none) then reading `GET /`; both databases in the same run.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import secrets  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import date  # noqa: E402

import asyncpg  # noqa: E402
from quart import Quart  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from app import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.tasks.notes import render_notes  # noqa: E402
from app.webcache.fragments import init_fragment_cache  # noqa: E402
from bench.harness import percentile  # noqa: E402
from bench.report import write_results  # noqa: E402
from bench.write_read import Target, loop  # noqa: E402
from tests.support.asgi import asgi_request  # noqa: E402
from tests.support.databases import (  # noqa: E402
    create_postgres_database,
    drop_postgres_database,
    run_alembic,
)
from tests.support.machine import describe_machine  # noqa: E402
from tests.support.memcached import MemcachedProcess  # noqa: E402
from tests.support.servers import LiveServer  # noqa: E402

TASKS = 100
JSON = [(b"content-type", b"application/json")]
CASES = ("fragments", "fragment cache off", "no notes")


def note(n: int) -> str:
    """About 1 KB of the Markdown people write in task notes, different for each task."""
    return (
        f"## Step {n}: what to do\n\n"
        f"Call **Bob** about the *order #{n}* before noon, then check the "
        f"[supplier's page](https://example.com/orders/{n}?tab=status) for the date.\n\n"
        "- buy milk, oat or soy (not *almond*)\n"
        "- return the `ladder` to the neighbours\n"
        "  - ask about the **hedge** while there\n"
        f"- book the [train](https://example.com/train/{n}) for Friday\n\n"
        "1. pack the bags\n2. water the plants\n3. lock up\n\n"
        "> Remember: the shop closes at *six* on Saturdays, and the "
        "post office at noon.\n\n"
        "```\ncurl -s https://example.com/api/status | jq .state\n```\n\n"
        f"Notes from last time: the parcel for {n} went to the wrong door; leave a "
        "note on the gate and keep the receipt until the refund arrives.\n\n"
        "### Questions\n\n"
        "- does the *warranty* cover the pump, or only the motor?\n"
        "- who has the spare key: **Alice** or the neighbours at number 12?\n"
        "- is the `invoice.pdf` the final one? See [the thread](https://example.com/t/9)."
    )


async def seed(database_url: str, with_notes: bool) -> None:
    dsn = make_url(database_url).set(drivername="postgresql").render_as_string(False)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.executemany(
            "INSERT INTO task (name, done, notes, version, created_at, updated_at) "
            "VALUES ($1, false, $2, $3, now(), now())",
            [(f"Task number {n}: buy milk, call Bob", note(n) if with_notes else "",
              secrets.token_urlsafe(16)) for n in range(1, TASKS + 1)],
        )
    finally:
        await connection.close()


def rename(round_: int) -> bytes:
    return json.dumps({"name": f"renamed {round_}"}).encode()


def new_notes(round_: int) -> bytes:
    return json.dumps({"notes": note(1000 + round_)}).encode()


async def settle() -> None:
    """Let the apps' background work (the page and fragment stores after an answer, the
    invalidation log's batched deletes after a write) finish, so that none of it runs
    inside the next timed request: the apps share this process and its event loop."""
    await asyncio.sleep(0.03)


@dataclass
class Case:
    name: str
    app: Quart
    write: Callable[[int], bytes]  # round -> the PATCH body
    times: list[float]


async def page_misses(urls: dict[str, str], memcached: MemcachedProcess, rounds: int) -> dict[
        str, list[float]]:
    """Seconds of each timed `GET /` per case."""
    cases = []
    for name in CASES:
        settings = Settings(
            write_rate_limit=0,
            env="production", secret_key=uuid.uuid4().hex, database_url=urls[name],
            memcache_servers=(memcached.address,), cache_key_prefix=name.replace(" ", "-"),
        )
        app = create_app(settings)
        await app.startup()
        if name == "fragment cache off":
            init_fragment_cache(app.jinja_env, None)
        cases.append(Case(name, app, rename if name == "no notes" else new_notes, []))
    try:
        for case in cases:  # warm: compile templates, open connections, fill the fragments
            for _ in range(5):
                assert (await asgi_request(case.app, "GET", "/", [], b"")).status == 200
        for round_ in range(rounds):
            task_id = 1 + round_ % TASKS
            for case in cases:
                sent = await asgi_request(case.app, "PATCH", f"/api/tasks/{task_id}", JSON,
                                          case.write(round_))
                assert sent.status == 200, sent.status
                await settle()
                started = time.perf_counter()
                got = await asgi_request(case.app, "GET", "/", [], b"")
                case.times.append(time.perf_counter() - started)
                assert got.status == 200 and got.headers.get(b"x-cache") == b"miss"
                await settle()
    finally:
        for case in cases:
            await case.app.shutdown()
    return {case.name: case.times for case in cases}


def write_read_loops(urls: dict[str, str], memcached: MemcachedProcess, seconds: float,
                     clients: int) -> dict[str, dict[str, float]]:
    """The write-then-read loop against one hypercorn process per database."""
    results = {}
    with tempfile.TemporaryDirectory() as logs:
        for name in ("fragments", "no notes"):
            env = {"DATABASE_URL": urls[name], "MEMCACHIER_SERVERS": memcached.address,
                   "APP_ENV": "production", "SECRET_KEY": uuid.uuid4().hex,
                   "CACHE_KEY_PREFIX": f"loop-{name.replace(' ', '-')}"}
            server = LiveServer(env, log=Path(logs) / f"{name}.log").start()
            try:
                notes = note(0) if name == "fragments" else ""
                record = loop(Target("127.0.0.1", server.port, False, notes), clients, seconds)
            finally:
                server.stop()
            assert record["stale"] == 0 and record["errors"] == 0, record
            results[name] = record
    return results


def render_cost() -> float:
    """Seconds to render one of the notes (median of 200)."""
    times = []
    for n in range(200):
        started = time.perf_counter()
        render_notes(note(n))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def report(misses: dict[str, list[float]], loops: dict[str, dict[str, float]],
           one_note: float, args: argparse.Namespace) -> str:
    machine = describe_machine()
    median = {name: statistics.median(times) for name, times in misses.items()}
    with_fragments, without_notes = median["fragments"], median["no notes"]
    uncached = median["fragment cache off"]
    lines = [
        f"Command: `.venv/bin/python bench/notes_fragments.py --rounds {args.rounds} "
        f"--seconds {args.seconds:g} --clients {args.clients}` (run on {date.today()}).",
        "",
        f"- Machine: {machine['nproc']} CPUs (`nproc`), {machine['cpu']}, {machine['memory']}; "
        f"Python {platform.python_version()}; PostgreSQL and memcached on loopback",
        f"- {TASKS} tasks, each with {len(note(1)):,} characters of Markdown notes "
        f"(rendering one: {one_note * 1e3:.2f} ms)",
        "",
        f"A page miss right after one write ({args.rounds} rounds, cases interleaved; "
        "in process, no HTTP server):",
        "",
        "| case | median | p90 | per page miss against no notes |",
        "|---|---:|---:|---:|",
    ]
    for name in CASES:
        times = misses[name]
        lines.append(f"| {name} | {median[name] * 1e3:.2f} ms | "
                     f"{percentile(times, 90) * 1e3:.2f} ms | "
                     f"{median[name] / without_notes:.2f}x |")
    lines += [
        "",
        f"The write-then-read loop over HTTP ({args.clients} clients, {args.seconds:g} s each, "
        "one hypercorn process; each client adds a task, then reads `GET /`):",
        "",
        "| tasks | pairs/s | pair p50 | pair p99 | stale reads |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, label in (("fragments", "with 1 KB notes"), ("no notes", "without notes")):
        record = loops[name]
        lines.append(f"| {label} | {record['pairs_per_s']:,.0f} | {record['pair_p50_ms']:.1f} ms"
                     f" | {record['pair_p99_ms']:.1f} ms | {record['stale']} |")
    ratio, saving = with_fragments / without_notes, uncached / with_fragments
    lines += [
        "",
        "Goals (computed from the numbers above by `notes_fragments.py`):",
        "",
        f"- the page miss after one write with notes costs at most 1.5x the same miss "
        f"without notes: {ratio:.2f}x: {'met' if ratio <= 1.5 else 'not met'}.",
        f"- and at least 5x less than rendering every note: {saving:.1f}x: "
        f"{'met' if saving >= 5 else 'not met'}.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--no-write", action="store_true", help="print, do not rewrite the doc")
    args = parser.parse_args()
    memcached = MemcachedProcess().start()
    urls: dict[str, str] = {}
    try:
        # A database each: a write through one app must not change what another caches.
        urls = {name: create_postgres_database() for name in CASES}
        for name, url in urls.items():
            run_alembic(url, ("upgrade", "head"))
            asyncio.run(seed(url, with_notes=name != "no notes"))
        misses = asyncio.run(page_misses(urls, memcached, args.rounds))
        loops = write_read_loops(urls, memcached, args.seconds, args.clients)
    finally:
        memcached.kill()
        for url in urls.values():
            drop_postgres_database(url)
    text = report(misses, loops, render_cost(), args)
    print(text)
    if not args.no_write:
        write_results("bench/notes_fragments.py", "## Notes and fragments", text)


if __name__ == "__main__":
    main()

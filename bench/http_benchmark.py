"""Benchmark: the task list over HTTP, beside the tutorial app, then in units of Q.

    .venv/bin/python bench/http_benchmark.py [--peer DIR [--peer-venv VENV]
        [--network-delay-ms 1.25]] [--sizes 10,100,1000,10000] [--seconds 10]
        [--rounds 2] [--q-seconds N] [--write-sizes 10,100] [--write-seconds 10]
        [--workers N] [--servers hypercorn,uvicorn,granian] [--out DIR] [--no-write] [--smoke]

With `--peer` (the MemCachier tutorial app's folder, ../shared/peers/tutorial), it first runs
bench/side_by_side.py: this app beside the tutorial in the same run, on loopback and over a
delayed network, at the sizes of `--sizes` up to 1,000 tasks. Its figures are the goals.
Without `--peer` that section is not run (and the report says so). What follows are
diagnostics.

Starts its own services: a fresh PostgreSQL database and a fresh MariaDB one (migrated by
Alembic, dropped at the end; `TASKLIST_TEST_POSTGRES_URL` and `TASKLIST_TEST_MARIADB_URL` as
for the tests) and a memcached on a free port. The app
runs as in production: `hypercorn --config hypercorn.toml 'app:create_app()'` with
`APP_ENV=production`, once with the cache on and once with `CACHE_ENABLED=0`.

For each task count it seeds the table with SQL, flushes memcached and runs
`wrk -t2 -c32 --latency` on `GET /` (with and without gzip accepted), `GET /api/tasks`
(likewise), the htmx fragment of `GET /`, the first page's `rel="next"` page, and, cached,
the revalidation of `GET /` (`If-None-Match`: 304) against its 200 in alternating runs.
A cached measurement starts once a probe sees `X-Cache: hit`. Then a write-then-read loop
across two app processes counts stale reads. Last, on MariaDB (`--mysql-sizes`): `GET /`
cached and uncached and the write-then-read loop, beside the same figures on PostgreSQL.

Every figure is also given in Q, the rate of a bare Quart app serving a constant 5 KB page
(bench/baselines.py) under hypercorn's defaults. The machine drifts (a shared VM's Q moves
by half within one run), so no figure is divided by a run-wide Q: the Q server stays up for
the whole run and a short Q run (`--q-seconds`, half of `--seconds` by default) is measured
between every two measurements. Each measurement is `--rounds` rounds; a round's ratio is
its rate over the mean of the Q runs just before and after it, and the measurement's ratio
the median over its rounds. Cached measurements are likewise paired with the cheapest
possible cache hit (H: `hit_floor_app` under uvloop), measured in the same slots.

Writes docs/performance/http.json and http.png (or into `--out`) and its block of
docs/PERFORMANCE.md (bench/report.py). `--smoke` is a one-minute check of the whole
pipeline that writes to a temporary directory only. Not a test: the numbers depend on the
machine; the diagnostics are computed from the run.
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tomllib  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Iterator, Mapping, Sequence  # noqa: E402
from contextlib import ExitStack, contextmanager  # noqa: E402
from dataclasses import asdict, dataclass, field, replace  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from html.parser import HTMLParser  # noqa: E402
from importlib.metadata import version  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import urljoin  # noqa: E402

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import pytest  # noqa: E402
from sqlalchemy import insert, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from app.tasks.repository import TASK  # noqa: E402
from bench import side_by_side  # noqa: E402
from bench.harness import (  # noqa: E402
    CONNECTIONS,
    THREADS,
    WRK,
    Goal,
    Probe,
    Record,
    Server,
    WrkResult,
    percentile,
    probe,
    running,
    stop_all,
    warm,
    wrk,
)
from bench.report import DOC, write_results  # noqa: E402
from tests.support.databases import (  # noqa: E402
    create_postgres_database,
    drop_postgres_database,
    run_alembic,
)
from tests.support.machine import describe_machine  # noqa: E402
from tests.support.mariadb import create_mariadb_database, drop_mariadb_database  # noqa: E402
from tests.support.memcached import MEMCACHED, MemcachedProcess, free_port  # noqa: E402
from tests.support.servers import ServerFailed  # noqa: E402

SCRIPT = "bench/http_benchmark.py"
HEADING = "## Task list over HTTP"
OUT = ROOT / "docs" / "performance"
BIN = Path(sys.executable).parent  # .venv/bin: the script runs under .venv/bin/python
WRITERS = 8
GZIP = (("Accept-Encoding", "gzip"),)
HTMX = (("HX-Request", "true"), ("HX-Request-Type", "partial"))
NEXT_PAGE = "<the first page's rel=next link>"


# --- servers -----------------------------------------------------------------------------


@dataclass
class Services:
    """What every server of the run shares: the database, memcached, a log directory; and
    the MariaDB database of the MySQL column (`on_mariadb()`: the same, on it)."""

    database_url: str
    memcached: MemcachedProcess
    logs: Path
    mariadb_url: str = ""
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    def on_mariadb(self) -> Services:
        return replace(self, database_url=self.mariadb_url)

    def app_env(self, cache: bool) -> dict[str, str]:
        return {"APP_ENV": "production", "SECRET_KEY": self.secret_key,
                "DATABASE_URL": self.database_url,
                "MEMCACHIER_SERVERS": self.memcached.address,
                "CACHE_ENABLED": "1" if cache else "0",
                "WRITE_RATE_LIMIT": "0"}  # the loops write far more than a client may

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"


def app_server(services: Services, kind: str, cache: bool, workers: int | None,
               name: str = "") -> Server:
    """The app under `kind` (hypercorn as in production, or uvicorn, or granian)."""
    port = free_port()
    name = name or f"{kind}-cache-{'on' if cache else 'off'}"
    if kind == "hypercorn":
        argv = [str(BIN / "hypercorn"), "--config", "hypercorn.toml",
                "--bind", f"127.0.0.1:{port}"]
        argv += ["--workers", str(workers)] if workers else []
        argv.append("app:create_app()")
    elif kind == "uvicorn":
        argv = [str(BIN / "uvicorn"), "--factory", "app:create_app", "--workers", "2",
                "--loop", "uvloop", "--host", "127.0.0.1", "--port", str(port)]
    elif kind == "granian":
        argv = [str(BIN / "granian"), "--interface", "asgi", "--factory", "--workers", "2",
                "--host", "127.0.0.1", "--port", str(port), "app:create_app"]
    else:
        raise ValueError(f"unknown server {kind!r}")
    return Server(name, argv, port, services.app_env(cache), services.log(name))


def baseline_server(services: Services, app: str, loop: str) -> Server:
    """A bench/baselines.py app under hypercorn's defaults, 2 workers, `loop` worker class."""
    port = free_port()
    argv = [str(BIN / "hypercorn"), "--workers", "2", "--bind", f"127.0.0.1:{port}"]
    argv += ["--worker-class", loop] if loop != "asyncio" else []
    argv.append(f"bench.baselines:{app}")
    env = {"BENCH_MEMCACHED": services.memcached.address}
    return Server(f"{app}-{loop}", argv, port, env, services.log(f"{app}-{loop}"),
                  ready_path="/")


# --- measuring ---------------------------------------------------------------------------


class _NextLink(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "a" and self.href is None and "next" in (values.get("rel") or "").split():
            self.href = values.get("href")


def next_page_path(base_url: str) -> str | None:
    """The href of the first page's `<a rel="next">`, if it has one."""
    parser = _NextLink()
    parser.feed(probe(base_url + "/").text())
    if not parser.href:
        return None
    return urljoin(base_url + "/", parser.href).removeprefix(base_url)


def seed(database_url: str, count: int) -> None:
    """Exactly `count` tasks, ids 1..count (straight SQL: flush the cache after)."""
    now = datetime.now(UTC)
    rows = [{"name": f"Task number {i}: buy milk, call Bob", "done": i % 3 == 0,
             "created_at": now, "updated_at": now} for i in range(1, count + 1)]

    async def insert_all() -> None:
        engine = create_async_engine(database_url)
        try:
            async with engine.begin() as connection:
                if connection.dialect.name == "mysql":
                    await connection.execute(text("TRUNCATE TABLE task"))
                else:
                    await connection.execute(text("TRUNCATE task RESTART IDENTITY"))
                if rows:
                    await connection.execute(insert(TASK), rows)
        finally:
            await engine.dispose()

    asyncio.run(insert_all())


def dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(False)


# --- the run -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    group: str  # the table it goes in
    label: str  # the request, as printed
    path: str  # or NEXT_PAGE
    headers: tuple[tuple[str, str], ...] = ()


CASES = (
    Case("page", "GET /", "/"),
    Case("page", "GET / gzip", "/", GZIP),
    Case("api", "GET /api/tasks", "/api/tasks"),
    Case("api", "GET /api/tasks gzip", "/api/tasks", GZIP),
    Case("fragment", "GET / htmx fragment", "/", HTMX),
    Case("next", "GET next page", NEXT_PAGE),
)
BASELINES = (("quart_app", "asyncio"), ("asgi_app", "asyncio"), ("hit_floor_app", "asyncio"),
             ("hit_floor_app", "uvloop"), ("quart_app", "uvloop"))
Q_CASE = ("quart_app", "asyncio")  # Q
FLOOR_CASE = ("hit_floor_app", "uvloop")  # H
DEFAULTS: Record = {"sizes": [10, 100, 1000, 10000], "seconds": 10, "rounds": 2,
                    "write_sizes": [10, 100], "write_seconds": 10}
MYSQL_CASE = Case("mysql", "GET /", "/")  # the MySQL column: GET / on MariaDB
SMOKE_PAIR_EVERY = 16  # --smoke measures a slot only every 16 rounds, to stay under a minute


class Run:
    """The records so far, the baseline slots so far, and the progress line.

    A slot is a Q run (and, beside a cached measurement, an H run) on the baseline servers,
    which stay up for the whole run. A full run measures a new slot between every two
    measurements, so each measurement has its own Q runs just before and after it, and two
    consecutive measurements share the slot between them."""

    def __init__(self, args: argparse.Namespace, services: Services, q_server: Server,
                 floor_server: Server) -> None:
        self.args, self.services = args, services
        self.q_server, self.floor_server = q_server, floor_server
        self.records: list[Record] = []
        self.slots: list[Record] = []
        self._uses = 0  # measurements since the last slot
        self.step, self.total = 0, planned_steps(args)
        self.started = time.monotonic()

    def slot(self, floor: bool) -> Record:
        """The slot beside the next measurement (or the last one): a new one once
        `pair_every` measurements were made since the last, H added to it if `floor`."""
        if not self.slots or self._uses >= self.args.pair_every:
            self.slots.append({"q": self._baseline(self.q_server), "floor": None,
                               "after_step": self.step})
            self._uses = 0
        current = self.slots[-1]
        if floor and current["floor"] is None:
            current["floor"] = self._baseline(self.floor_server)
        return current

    def used(self) -> None:
        """One measurement was made since the last slot."""
        self._uses += 1

    def _baseline(self, server: Server) -> float:
        result = wrk(server.url + "/", self.args.q_seconds)
        if result.notes() or not result.requests:
            raise RuntimeError(f"{server.name} failed during the run: {result.notes()}\n"
                               f"{server.log_tail()}")
        return result.rps

    def add(self, record: Record, what: str) -> Record:
        """Keep `record` and print its progress line (with its paired ratios)."""
        self.step += 1
        self.records.append(record)
        if "skipped" in record:
            outcome = f"skipped: {record['skipped']}"
        else:
            rate = record.get("pairs_per_s", record.get("rps", 0.0))
            unit = "pairs/s" if "pairs_per_s" in record else "req/s"
            outcome = f"{rate:,.0f} {unit}, {ratio_text(record)}"
            if "compared_200" in record:
                ok = record["compared_200"]
                outcome += f"; its 200: {ok['rps']:,.0f} req/s, {ratio_text(ok)}"
            if record.get("notes"):
                outcome += f"; {record['notes']}"
        minutes, seconds = divmod(round(time.monotonic() - self.started), 60)
        print(f"[{self.step}/{self.total} {minutes}:{seconds:02}] {what} ... {outcome}",
              flush=True)
        return record


def ratio_text(record: Record) -> str:
    """`1.52 Q (1.48, 1.56), 0.61 H`: the median in Q, its rounds, the median in H."""
    text = f"{record['in_q']:.2f} Q"
    if len(record["per_round"]) > 1:
        text += f" ({per_round(record)})"
    if "in_floor" in record:
        text += f", {record['in_floor']:.2f} H"
    return text


def planned_steps(args: argparse.Namespace) -> int:
    per_size = 2 * len(CASES) + 1  # the cases cached and uncached, the 304
    others = 2 * len([s for s in args.servers if s != "hypercorn"])
    writes = 2 * len(args.write_sizes)  # with the invalidation log and without
    mysql = 2 * len(args.mysql_sizes) + len(args.write_sizes)  # GET / both ways; the loop
    return len(BASELINES) + per_size * len(args.sizes) + writes + others + mysql


def measured(result: WrkResult) -> Record:
    return {**asdict(result), "notes": result.notes()}


def paired[T](run: Run, once: Callable[[], T], *, floor: bool,
              rounds: int | None = None) -> list[tuple[T, Record, Record]]:
    """`rounds` (default `--rounds`) rounds of [slot, `once()`] and a slot after the last:
    each result with the slots just before and after it. H is measured in those slots if
    `floor`."""
    found = []
    for _ in range(run.args.rounds if rounds is None else rounds):
        before = run.slot(floor)
        result = once()
        run.used()
        found.append((result, before, run.slot(floor)))
    return found


def beside(rate: float, before: Record, after: Record, floor: bool) -> Record:
    """One round: `rate` over the mean of the Q runs just before and after it (and of the H
    runs if `floor`)."""
    entry = {"rate": rate, "q_before": before["q"], "q_after": after["q"],
             "in_q": rate / statistics.fmean((before["q"], after["q"]))}
    if floor:
        entry.update(floor_before=before["floor"], floor_after=after["floor"],
                     in_floor=rate / statistics.fmean((before["floor"], after["floor"])))
    return entry


def ratios(entries: Sequence[Record]) -> Record:
    """The rounds and their medians: `in_q`, and `in_floor` if they were paired with H."""
    found: Record = {"in_q": statistics.median(e["in_q"] for e in entries),
                     "per_round": list(entries)}
    if "in_floor" in entries[0]:
        found["in_floor"] = statistics.median(e["in_floor"] for e in entries)
    return found


def median_result(results: Sequence[WrkResult]) -> Record:
    """The rounds' wrk figures in one: median rate and latencies, counts summed."""
    errors: Counter[str] = Counter()
    for result in results:
        errors.update(result.socket_errors)

    def median(key: str) -> float:
        return statistics.median(getattr(r, key) for r in results)

    return measured(WrkResult(rps=median("rps"), latency_avg_ms=median("latency_avg_ms"),
                              latency_p99_ms=median("latency_p99_ms"),
                              requests=sum(r.requests for r in results),
                              non_2xx=sum(r.non_2xx for r in results),
                              socket_errors=dict(errors)))


def paired_wrk(run: Run, url: str, headers: Sequence[tuple[str, str]], *, floor: bool,
               rounds: int | None = None,
               before_each: Callable[[], object] = lambda: None) -> Record:
    """`wrk` on `url` in paired rounds: the median figures and the paired ratios."""

    def once() -> WrkResult:
        before_each()
        return wrk(url, run.args.seconds, headers)

    found = paired(run, once, floor=floor, rounds=rounds)
    return {**median_result([result for result, _, _ in found]),
            **ratios([beside(result.rps, before, after, floor)
                      for result, before, after in found])}


def baselines(run: Run, servers: Mapping[tuple[str, str], Server], when: str) -> None:
    """Each baseline once (one round), between slots, to show the reference rates in Q."""
    for (app, loop), server in servers.items():
        answer = warm(server.url + "/", (), cache=False)
        figures = paired_wrk(run, server.url + "/", (), floor=False, rounds=1)
        record = {"group": "baseline", "app": app, "loop": loop, "when": when,
                  **answer.summary(), **figures}
        run.add(record, f"baseline {app} ({loop}, {when})")


def measure_case(run: Run, server: Server, case: Case, *, cache: bool, tasks: int,
                 kind: str = "hypercorn") -> Record:
    """`--rounds` paired rounds, each warmed first; the first probe is what is shown."""
    record: Record = {"group": case.group, "case": case.label, "server": kind,
                      "cache": "on" if cache else "off", "tasks": tasks,
                      "headers": dict(case.headers)}
    path = next_page_path(server.url) if case.path == NEXT_PAGE else case.path
    if path is None:
        return {**record, "skipped": "no next page"}
    url = server.url + path
    answers: list[Probe] = []
    figures = paired_wrk(run, url, case.headers, floor=cache,
                         before_each=lambda: answers.append(warm(url, case.headers, cache)))
    return {**record, "path": path, **answers[0].summary(), **figures}


def case_line(kind: str, cache: bool, tasks: int, label: str) -> str:
    server = "" if kind == "hypercorn" else f"{kind} "
    return f"{server}cache {'on ' if cache else 'off'} {tasks:5} tasks {label}"


def not_modified(run: Run, server: Server, tasks: int) -> Record:
    """The 304 of `GET /` against its cached 200, alternating: each round runs the 200 then
    the 304 between two slots. Rates are the best of each; ratios the medians over rounds."""
    url = server.url + "/"
    record: Record = {"group": "304", "case": "GET / If-None-Match", "server": "hypercorn",
                      "cache": "on", "tasks": tasks, "rounds": run.args.rounds}
    first = warm(url, (), cache=True)
    etag = first.headers.get("ETag")
    if not etag:
        return {**record, "skipped": f"no ETag on the 200 (status {first.status})"}
    headers = (("If-None-Match", etag),)
    answer = probe(url, headers)

    def once() -> tuple[WrkResult, WrkResult]:
        return wrk(url, run.args.seconds), wrk(url, run.args.seconds, headers)

    found = paired(run, once, floor=True)
    best_200 = max((ok for (ok, _), _, _ in found), key=lambda r: r.rps)
    best_304 = max((nm for (_, nm), _, _ in found), key=lambda r: r.rps)
    return {**record, "path": "/", "headers": dict(headers), **answer.summary(),
            **measured(best_304),
            **ratios([beside(nm.rps, before, after, True) for (_, nm), before, after in found]),
            "compared_200": {**asdict(best_200), **ratios(
                [beside(ok.rps, before, after, True) for (ok, _), before, after in found])}}


def sizes_loop(run: Run, cached: Server, uncached: Server) -> None:
    """Both app servers stay up while the table is re-seeded for each size."""
    services = run.services
    for tasks in run.args.sizes:
        seed(services.database_url, tasks)
        services.memcached.flush()  # the seed bypassed the app: drop every generation
        for server, cache in ((cached, True), (uncached, False)):
            for case in CASES:
                run.add(measure_case(run, server, case, cache=cache, tasks=tasks),
                        case_line("hypercorn", cache, tasks, case.label))
            if cache:
                run.add(not_modified(run, server, tasks),
                        case_line("hypercorn", cache, tasks, "GET / 304 (vs its 200)"))


def mysql_column(run: Run) -> None:
    """`GET /` cached and uncached, and the write-then-read loop, on MariaDB."""
    services = run.services.on_mariadb()
    cached = app_server(services, "hypercorn", True, run.args.workers, name="mariadb-cache-on")
    uncached = app_server(services, "hypercorn", False, run.args.workers,
                          name="mariadb-cache-off")
    with running(cached, uncached):
        for tasks in run.args.mysql_sizes:
            seed(services.database_url, tasks)
            services.memcached.flush()
            for server, cache in ((cached, True), (uncached, False)):
                run.add(measure_case(run, server, MYSQL_CASE, cache=cache, tasks=tasks),
                        case_line("hypercorn", cache, tasks, "GET / on MariaDB"))
    for tasks in run.args.write_sizes:
        run.add(write_then_read(run, tasks, mariadb=True),
                f"write then read, {tasks} tasks at start, on MariaDB")


def other_servers(run: Run) -> None:
    """The app's `GET /` under uvicorn and granian; a server that fails is reported."""
    tasks = server_size(run.args)
    others = [s for s in run.args.servers if s != "hypercorn"]
    if not others:
        return
    seed(run.services.database_url, tasks)
    run.services.memcached.flush()
    for kind in others:
        for cache in (True, False):
            server = app_server(run.services, kind, cache, None)
            line = case_line(kind, cache, tasks, "GET /")
            try:
                with server:
                    record = measure_case(run, server, CASES[0], cache=cache, tasks=tasks,
                                          kind=kind)
            except (ServerFailed, RuntimeError) as error:
                record = {"case": "GET /", "server": kind, "cache": "on" if cache else "off",
                          "tasks": tasks, "skipped": f"failed: {str(error).splitlines()[0]}",
                          "error": str(error)}
            run.add({**record, "group": "servers"}, line)


def server_size(args: argparse.Namespace) -> int:
    """The size the other servers are measured at: 100 tasks, or the first of --sizes."""
    return 100 if 100 in args.sizes else args.sizes[0]


@dataclass
class PairLog:
    durations: list[float] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    x_cache: Counter[str] = field(default_factory=Counter)


async def writer(client: httpx.AsyncClient, urls: tuple[str, str], number: int,
                 deadline: float, log: PairLog) -> None:
    """POST through one process, then at once GET / through the other (alternating)."""
    i = 0
    while time.monotonic() < deadline:
        write_url, read_url = urls[(number + i) % 2], urls[(number + i + 1) % 2]
        name = f"bench-{number}-{i}-{secrets.token_hex(4)}"
        i += 1
        started = time.monotonic()
        try:
            created = await client.post(f"{write_url}/api/tasks", json={"name": name})
            if created.status_code != 201:
                log.errors.append(f"POST via {write_url}: {created.status_code}")
                continue
            page = await client.get(f"{read_url}/")
        except httpx.HTTPError as error:
            log.errors.append(f"{error.__class__.__name__} via {write_url}/{read_url}: {error}")
            continue
        log.durations.append(time.monotonic() - started)
        log.x_cache[page.headers.get("x-cache", "-")] += 1
        if page.status_code != 200:
            log.errors.append(f"GET / via {read_url}: {page.status_code}")
        elif name not in page.text:
            log.stale.append(f"GET / via {read_url} lacks {name} "
                             f"(X-Cache {page.headers.get('x-cache')})")


def write_then_read(run: Run, tasks: int, *, invalidation_log: bool = True,
                    mariadb: bool = False) -> Record:
    """Two app processes of one worker each (so the reader is another process than the
    writer), sharing PostgreSQL (MariaDB if `mariadb`) and memcached, and `WRITERS`
    concurrent write/read pairs: `--rounds` paired rounds, each from a table re-seeded with
    `tasks` tasks. `invalidation_log=False`: with `INVALIDATION_LOG=0`, to measure what the
    log costs."""
    services = run.services.on_mariadb() if mariadb else run.services
    log_name = ("-mariadb" if mariadb else "") + ("" if invalidation_log else "-no-log")
    a = app_server(services, "hypercorn", True, 1, name=f"write-read-{tasks}{log_name}-a")
    b = app_server(services, "hypercorn", True, 1, name=f"write-read-{tasks}{log_name}-b")
    for server in (a, b):
        server.env["INVALIDATION_LOG"] = "1" if invalidation_log else "0"
    log = PairLog()

    async def loop() -> float:
        async with httpx.AsyncClient(timeout=30) as client:
            started = time.monotonic()
            deadline = started + run.args.write_seconds
            await asyncio.gather(*(writer(client, (a.url, b.url), n, deadline, log)
                                   for n in range(WRITERS)))
            return time.monotonic() - started

    def once() -> tuple[int, float]:
        """The pairs of one round and how long it took."""
        seed(services.database_url, tasks)
        services.memcached.flush()
        pairs = len(log.durations)
        seconds = asyncio.run(loop())
        return len(log.durations) - pairs, seconds

    with running(a, b):
        found = paired(run, once, floor=False)
    pairs = len(log.durations)
    seconds = sum(s for (_, s), _, _ in found)
    notes = ", ".join(filter(None, [f"{len(log.stale)} stale" if log.stale else "",
                                    f"{len(log.errors)} errors" if log.errors else ""]))
    return {"group": "write-read", "tasks": tasks, "invalidation_log": invalidation_log,
            "database": "mariadb" if mariadb else "postgres",
            "writers": WRITERS, "seconds": seconds,
            "pairs": pairs,
            "pairs_per_s": statistics.median(n / s for (n, s), _, _ in found),
            **ratios([beside(n / s, before, after, False) for (n, s), before, after in found]),
            "stale": len(log.stale), "stale_examples": log.stale[:5], "errors": len(log.errors),
            "error_examples": log.errors[:5], "x_cache": dict(log.x_cache),
            "pair_avg_ms": 1000 * statistics.fmean(log.durations) if pairs else math.nan,
            "pair_p99_ms": 1000 * percentile(log.durations, 99), "notes": notes}


# --- what the run was on -----------------------------------------------------------------


PACKAGES = ("hypercorn", "quart", "sqlalchemy", "asyncpg", "asyncmy", "uvloop", "aiomcache",
            "httpx", "uvicorn", "granian")


def versions(database_url: str, mariadb_url: str) -> dict[str, str]:
    def first_line(argv: list[str]) -> str:
        done = subprocess.run(argv, capture_output=True, text=True)
        return (done.stdout or done.stderr).strip().splitlines()[0]

    return {"python": platform.python_version(),
            **{p: version(p) for p in PACKAGES},
            "memcached": first_line([MEMCACHED, "-V"]).removeprefix("memcached "),
            "postgres": asyncio.run(postgres_version(database_url)),
            "mariadb": asyncio.run(mariadb_version(mariadb_url)),
            "wrk": first_line([WRK, "-v"]).split()[1]}


async def mariadb_version(database_url: str) -> str:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            return (await connection.scalar(text("SELECT VERSION()"))).split("-")[0]
    finally:
        await engine.dispose()


async def postgres_version(database_url: str) -> str:
    connection = await asyncpg.connect(dsn(database_url))
    try:
        return (await connection.fetchval("SHOW server_version")).split()[0]
    finally:
        await connection.close()


def production_config() -> dict[str, Any]:
    with (ROOT / "hypercorn.toml").open("rb") as config:
        return tomllib.load(config)


# --- goals, report, chart ----------------------------------------------------------------


class Results:
    """Look-ups over the records and slots of one run."""

    def __init__(self, records: list[Record], slots: list[Record]) -> None:
        self.records, self.slots = records, slots
        self.q_runs = [s["q"] for s in slots]
        self.q = statistics.median(self.q_runs) if self.q_runs else math.nan
        self.floor_runs = [s["floor"] for s in slots if s["floor"] is not None]
        self.floor = statistics.median(self.floor_runs) if self.floor_runs else math.nan
        self.floor_in_q = statistics.median(s["floor"] / s["q"] for s in slots
                                            if s["floor"] is not None) \
            if self.floor_runs else math.nan

    def find(self, **match: Any) -> Record | None:
        for r in self.records:
            if all(r.get(k) == v for k, v in match.items()) and "skipped" not in r:
                return r
        return None

    def page(self, tasks: int, cache: str, case: str = "GET /") -> Record | None:
        return self.find(group="page", server="hypercorn", cache=cache, tasks=tasks, case=case)


def diagnostics(res: Results) -> list[Goal]:
    """The checks of the Q-based figures: no longer goals (those are bench/side_by_side.py's,
    against the tutorial), kept as diagnostics."""
    return [*cached_page_goals(res), *uncached_page_goals(res), *write_read_goals(res),
            *not_modified_goals(res), p99_goal(res)]


def at_least(text: str, record: Record | None, ratio: float) -> Goal:
    if record is None:
        return Goal(text, None, "not in this run")
    return Goal(text, record["in_q"] >= ratio,
                f"{record['rps']:,.0f} req/s, {record['in_q']:.2f} Q")


def cached_page_goals(res: Results) -> list[Goal]:
    found = [at_least(f"cached `GET /`, {n} tasks, >= 2.0 Q", res.page(n, "on"), 2.0)
             for n in (10, 100)]
    for n in (1000, 10000):
        found.append(at_least(f"cached `GET /`, {n} tasks (first page), >= 2.0 Q",
                              res.page(n, "on"), 2.0))
        gz = res.page(n, "on", "GET / gzip")
        goal = at_least(f"cached `GET /` with gzip accepted, {n} tasks, >= 2.0 Q", gz, 2.0)
        if gz is not None:
            goal.detail += f" (served {gz['content_encoding']}, {gz['body_bytes']:,} B)"
        found.append(goal)
    return found


def uncached_page_goals(res: Results) -> list[Goal]:
    found = [at_least("uncached `GET /`, 10 tasks, >= 0.75 Q", res.page(10, "off"), 0.75),
             at_least("uncached `GET /`, 100 tasks, >= 0.19 Q", res.page(100, "off"), 0.19)]
    hundred = res.page(100, "off")
    for n in (1000, 10000):
        text = f"uncached `GET /`, {n} tasks, within 10% of 100 tasks (>= 90% of its rate in Q)"
        record = res.page(n, "off")
        if record is None or hundred is None:
            found.append(Goal(text, None, "not in this run"))
            continue
        share = record["in_q"] / hundred["in_q"]
        found.append(Goal(text, share >= 0.9, f"{record['in_q']:.2f} Q against "
                          f"{hundred['in_q']:.2f} Q ({share:.0%})"))
    return found


def write_read_goals(res: Results) -> list[Goal]:
    found = []
    for n, ratio in ((10, 0.19), (100, 0.09)):
        text = f"write then read, {WRITERS} writers, {n} tasks, >= {ratio} Q pairs/s"
        record = _write_read(res, n, invalidation_log=True)
        if record is None:
            found.append(Goal(text, None, "not in this run"))
            continue
        found.append(Goal(text, record["in_q"] >= ratio,
                          f"{record['pairs_per_s']:,.0f} pairs/s, {record['in_q']:.2f} Q"))
        text = f"write then read, {n} tasks, with the invalidation log >= 0.85x without it"
        without = _write_read(res, n, invalidation_log=False)
        if without is None:
            found.append(Goal(text, None, "not in this run"))
            continue
        share = record["in_q"] / without["in_q"]
        found.append(Goal(text, share >= 0.85, f"{record['in_q']:.3f} Q against "
                          f"{without['in_q']:.3f} Q ({share:.2f}x)"))
    loops = [r for r in res.records if r["group"] == "write-read"]
    stale = sum(r["stale"] for r in loops)
    pairs = sum(r["pairs"] for r in loops)
    found.append(Goal("write then read: zero stale reads", (stale == 0) if loops else None,
                      f"{stale} stale of {pairs:,} reads"))
    return found


def _write_read(res: Results, tasks: int, *, invalidation_log: bool) -> Record | None:
    """The PostgreSQL write-then-read loop at `tasks`, with the invalidation log or without."""
    return res.find(group="write-read", database="postgres", tasks=tasks,
                    invalidation_log=invalidation_log)


def not_modified_goals(res: Results) -> list[Goal]:
    found = []
    for r in res.records:
        if r["group"] != "304":
            continue
        text = f"`GET /` 304 at least as fast as the cached 200, {r['tasks']} tasks"
        if "skipped" in r:
            found.append(Goal(text, None, r["skipped"]))
            continue
        ok = r["compared_200"]["rps"]
        found.append(Goal(text, r["rps"] >= ok, f"{r['rps']:,.0f} against {ok:,.0f} req/s "
                          f"(best of {r['rounds']} each)"))
    return found


def p99_goal(res: Results) -> Goal:
    sizes = sorted({r["tasks"] for r in res.records if r["group"] == "page"})
    p99 = {n: r["latency_p99_ms"] for n in sizes if (r := res.page(n, "on")) is not None}
    detail = ", ".join(f"{n} tasks {p99[n]:,.1f} ms" if n in p99 else f"{n} tasks missing"
                       for n in sizes)
    return Goal("p99 of cached `GET /` recorded for each size",
                (set(p99) == set(sizes)) if sizes else None, detail or "no sizes")


GROUP_TITLES = {
    "page": "`GET /` (the full page)",
    "api": "`GET /api/tasks`",
    "fragment": "`GET /` as an htmx fragment (`HX-Request: true`, `HX-Request-Type: partial`)",
    "next": "The next page (the first page's `rel=\"next\"` link)",
}


def served(r: Record) -> str:
    return f"{r['status']} {r['content_encoding']}, {r['body_bytes']:,} B"


def per_round(r: Record) -> str:
    return ", ".join(f"{e['in_q']:.2f}" for e in r["per_round"])


def in_floor(r: Record) -> str:
    return f"{r['in_floor']:.2f} H" if "in_floor" in r else "–"


def rate_cells(r: Record, floor: bool = True) -> str:
    """req/s | in Q | rounds | (in H |) avg | p99 | notes (or the reason it was skipped)."""
    if "skipped" in r:
        return f"– | – | – | {'– | ' if floor else ''}– | – | {r['skipped']}"
    h = f"{in_floor(r)} | " if floor else ""
    return (f"{r['rps']:,.0f} | {r['in_q']:.2f} Q | {per_round(r)} | {h}"
            f"{r['latency_avg_ms']:,.1f} ms | {r['latency_p99_ms']:,.1f} ms | "
            f"{r.get('notes', '')}")


RATE_HEADER = "req/s | in Q | rounds, in Q | in H | avg | p99 | notes |"
RATE_ALIGN = "---:|---:|---|---:|---:|---:|---|"


def case_table(res: Results, group: str) -> list[str]:
    lines = [f"#### {GROUP_TITLES[group]}", "",
             "| tasks | cache | request | path | served (status, encoding, bytes) | X-Cache | "
             + RATE_HEADER, "|---:|---|---|---|---|---|" + RATE_ALIGN]
    for r in res.records:
        if r["group"] == group and r["server"] == "hypercorn":
            path, shown = ("–", "–") if "skipped" in r else (f"`{r['path']}`", served(r))
            lines.append(f"| {r['tasks']} | {r['cache']} | {r['case']} | {path} | {shown} | "
                         f"{r.get('x_cache') or '–'} | {rate_cells(r)} |")
    return [*lines, ""]


def not_modified_table(res: Results) -> list[str]:
    lines = ["#### `GET /` revalidated (`If-None-Match`: 304) against its cached 200", "",
             "| tasks | 304 best req/s | in Q | in H | p99 | cached 200 best req/s | in Q "
             "| in H | p99 | 304 / 200 |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res.records:
        if r["group"] != "304":
            continue
        if "skipped" in r:
            lines.append(f"| {r['tasks']} | {r['skipped']} | | | | | | | | |")
            continue
        ok = r["compared_200"]
        lines.append(f"| {r['tasks']} | {r['rps']:,.0f} | {r['in_q']:.2f} Q | {in_floor(r)} | "
                     f"{r['latency_p99_ms']:,.1f} ms | {ok['rps']:,.0f} | {ok['in_q']:.2f} Q | "
                     f"{in_floor(ok)} | {ok['latency_p99_ms']:,.1f} ms | "
                     f"{r['rps'] / ok['rps']:.2f} |")
    return [*lines, ""]


def spread(runs: Sequence[float], median: float) -> str:
    if not runs:
        return "none"
    return (f"{min(runs):,.0f} to {max(runs):,.0f} req/s "
            f"(spread {(max(runs) - min(runs)) / median:.0%} of the median)")


def baseline_table(res: Results, meta: Record) -> list[str]:
    lines = ["#### Baselines (bench/baselines.py, a 5,120-byte `text/html` page)", "",
             "Each once, between two Q runs:", "",
             "| app | worker class | when | req/s | in Q | rounds, in Q | avg | p99 | notes |",
             "|---|---|---|---:|---:|---|---:|---:|---|"]
    for r in res.records:
        if r["group"] == "baseline":
            lines.append(f"| `{r['app']}` | {r['loop']} | {r['when']} | "
                         f"{rate_cells(r, floor=False)} |")
    every = meta["pair_every"]
    where = ("between every two rounds" if every == 1
             else f"once every {every} rounds (a smoke run)")
    return [*lines, "",
            f"Q runs: {len(res.q_runs)} runs of `quart_app` (asyncio), "
            f"`wrk -d{meta['q_seconds']}s` each, {where}: {spread(res.q_runs, res.q)}, "
            f"median **Q = {res.q:,.0f} req/s**. That is how far the machine drifted during "
            "the run, so this median is only the scale of the chart's left panel; every "
            "\"in Q\" is paired with the Q runs next to it.",
            "",
            f"H runs: {len(res.floor_runs)} runs of `hit_floor_app` (uvloop) in the same slots, "
            f"beside each cached measurement: {spread(res.floor_runs, res.floor)}, median "
            f"H = {res.floor:,.0f} req/s; H / Q within a slot: median {res.floor_in_q:.2f}.",
            ""]


def write_read_table(res: Results) -> list[str]:
    lines = ["#### Write then read across two processes", "",
             f"{WRITERS} concurrent writers, each: `POST /api/tasks` through one app process "
             "(one worker), then as soon as the 201 arrives `GET /` through the other; the "
             "read is stale if the page lacks the new task. Each round starts from a table "
             "re-seeded with the tasks at start; pairs/s is the median over rounds.", "",
             "| database | tasks at start | invalidation log | pairs | pairs/s | in Q "
             "| rounds, in Q | avg pair | p99 pair | stale | errors | X-Cache of the reads |",
             "|---|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in res.records:
        if r["group"] == "write-read":
            seen = ", ".join(f"{k} {v:,}" for k, v in sorted(r["x_cache"].items()))
            log = "on" if r.get("invalidation_log", True) else "off"
            database = DATABASES[r.get("database", "postgres")]
            lines.append(f"| {database} | {r['tasks']} | {log} | {r['pairs']:,} | "
                         f"{r['pairs_per_s']:,.0f} | "
                         f"{r['in_q']:.2f} Q | {per_round(r)} | {r['pair_avg_ms']:,.1f} ms | "
                         f"{r['pair_p99_ms']:,.1f} ms | {r['stale']} | {r['errors']} | "
                         f"{seen} |")
    examples = [e for r in res.records if r["group"] == "write-read"
                for e in r["stale_examples"] + r["error_examples"]]
    return [*lines, *[f"- {e}" for e in examples[:10]], ""]


DATABASES = {"postgres": "PostgreSQL", "mariadb": "MariaDB"}


def mysql_table(res: Results) -> list[str]:
    """`GET /` on MariaDB beside PostgreSQL's (where the run measured that size there too),
    and the write-then-read loop on each."""
    lines = ["#### The MySQL column: `GET /` on MariaDB and on PostgreSQL", "",
             "The same servers and measurement, the app's `DATABASE_URL` on a fresh MariaDB "
             "database (asyncmy) instead of PostgreSQL (asyncpg).", "",
             "| tasks | cache | PostgreSQL req/s | PostgreSQL in Q | MariaDB req/s "
             "| MariaDB in Q | MariaDB rounds, in Q | MariaDB X-Cache |",
             "|---:|---|---:|---:|---:|---:|---|---|"]
    for r in res.records:
        if r["group"] != "mysql" or "skipped" in r:
            continue
        pg = res.page(r["tasks"], r["cache"])
        pg_cells = (f"{pg['rps']:,.0f} | {pg['in_q']:.2f} Q" if pg and "skipped" not in pg
                    else "not measured | -")
        lines.append(f"| {r['tasks']} | {r['cache']} | {pg_cells} | {r['rps']:,.0f} | "
                     f"{r['in_q']:.2f} Q | {per_round(r)} | {r.get('x_cache') or '–'} |")
    loops = {(r.get("database", "postgres"), r["tasks"]): r for r in res.records
             if r["group"] == "write-read" and r.get("invalidation_log", True)}
    lines += ["", "| write then read, tasks at start | PostgreSQL pairs/s | in Q "
              "| MariaDB pairs/s | in Q | MariaDB stale |", "|---:|---:|---:|---:|---:|---:|"]
    for (database, tasks), r in sorted(loops.items()):
        pg = loops.get(("postgres", tasks))
        if database == "mariadb" and pg is not None:
            lines.append(f"| {tasks} | {pg['pairs_per_s']:,.0f} | {pg['in_q']:.2f} Q | "
                         f"{r['pairs_per_s']:,.0f} | {r['in_q']:.2f} Q | {r['stale']} |")
    return [*lines, ""]


def servers_table(res: Results, tasks: int) -> list[str]:
    rows = [r for r in res.records if r["group"] == "servers"]
    if not rows:
        return []
    ours = [r for r in res.records if r["group"] == "page" and r["case"] == "GET /"
            and r["tasks"] == tasks]
    lines = [f"#### The app's `GET /` under other servers ({tasks} tasks, 2 workers)", "",
             "| server | cache | " + RATE_HEADER, "|---|---|" + RATE_ALIGN]
    for r in ours + rows:
        lines.append(f"| {r['server']} | {r['cache']} | {rate_cells(r)} |")
    return [*lines, ""]


def short_run(meta: Record) -> list[str]:
    """A warning when the run measured less than the default run does."""
    changed = []
    for key, default in DEFAULTS.items():
        if (value := meta[key]) != default:
            shown = ",".join(map(str, value)) if isinstance(value, list) else value
            changed.append(f"--{key.replace('_', '-')} {shown}")
    if not changed:
        return []
    return [f"**A short run** (`{' '.join(changed)}`), not the default run: fewer sizes, "
            "runs or rounds; what it did not measure is \"not measured\" below.", ""]


def side_by_side_line(meta: Record) -> str:
    if meta.get("peer"):
        return ("This run measured the app beside the tutorial app first (`--peer`): those "
                "figures, under \"Beside the tutorial app\", are the goals; what follows are "
                "diagnostics.")
    return ("The side-by-side with the tutorial app was **not run** (no `--peer`): the figures "
            "under \"Beside the tutorial app\" are from an earlier run. What follows are "
            "diagnostics, not goals.")


def render(res: Results, meta: Record) -> str:
    v, m, config = meta["versions"], meta["machine"], meta["hypercorn_toml"]
    packages = ", ".join(f"{p} {v[p]}" for p in PACKAGES)
    workers = meta["workers"] or config.get("workers", 1)
    lines = [
        f"Written by `{SCRIPT}` on {meta['date']}. Command:", "", "```", meta["command"], "```",
        "", *short_run(meta), side_by_side_line(meta), "",
        f"Each measurement: {meta['rounds']} round(s) of `wrk -t{THREADS} -c{CONNECTIONS} "
        f"-d{meta['seconds']}s --latency` against "
        "`hypercorn --config hypercorn.toml 'app:create_app()'` "
        f"(worker class {config.get('worker_class', 'asyncio')}, {workers} workers), "
        "`APP_ENV=production`, on a fresh PostgreSQL database and one memcached; \"cache off\" "
        "is `CACHE_ENABLED=0`. The table is seeded with SQL and memcached flushed; a cached "
        "round starts once a probe sees `X-Cache: hit` (the X-Cache column), and the probe "
        "(no decompression, like wrk) shows the encoding and size served. wrk, the servers, "
        "PostgreSQL and memcached share the machine, whose speed drifts during a run, so "
        "every ratio is paired: the baseline servers stay up for the whole run, and between "
        f"every two rounds a Q run (`wrk -d{meta['q_seconds']}s` on `quart_app`, a bare "
        "Quart app serving a constant 5 KB page) is measured, with, beside cached rounds, "
        "an H run (`hit_floor_app` under uvloop, the cheapest possible cache hit). A round "
        "in Q is its rate over the mean of the Q runs just before and after it; \"in Q\" is "
        "the median over rounds (each listed under \"rounds, in Q\"), \"in H\" likewise "
        "against the H runs, and req/s, avg and p99 are the medians over rounds. The 304 and "
        "its cached 200 alternate within each round; their req/s are the best of each.",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, {m['os']}. "
        f"Python {v['python']}; {packages}; PostgreSQL {v['postgres']}; MariaDB "
        f"{v.get('mariadb', '-')}; memcached "
        f"{v['memcached']}; wrk {v['wrk']}.",
        "",
        *baseline_table(res, meta),
        *[line for group in GROUP_TITLES for line in case_table(res, group)],
        *not_modified_table(res),
        *write_read_table(res),
        *mysql_table(res),
        *servers_table(res, meta["server_size"]),
        "Diagnostics (computed from the figures above, in paired Q; not goals: the goals "
        "are the side-by-side's, under \"Beside the tutorial app\"):", "",
        *[goal.line() for goal in diagnostics(res)],
    ]
    return "\n".join(lines)


SERIES = (*((c.group, c.label) for c in CASES), ("304", "GET / If-None-Match"))


def chart(res: Results, path: Path) -> None:
    """req/s against tasks (log x), one line per case, the run's median Q as a horizontal
    line; and each case's paired ratio in Q, with H's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (rates, units) = plt.subplots(1, 2, figsize=(13, 7))
    colours = iter(plt.get_cmap("tab20").colors)
    for group, case in SERIES:
        for cache in ("on", "off"):
            points = sorted((r["tasks"], r["rps"], r["in_q"]) for r in res.records
                            if r["group"] == group and r.get("case") == case
                            and r.get("server") == "hypercorn" and r["cache"] == cache
                            and "skipped" not in r)
            if points:
                xs, ys, qs = zip(*points, strict=True)
                style = {"linestyle": "-" if cache == "on" else "--", "marker": "o",
                         "color": next(colours), "label": f"{case}, cache {cache}"}
                rates.plot(xs, ys, **style)
                units.plot(xs, qs, **style)
    loops = sorted((r["tasks"], r["pairs_per_s"], r["in_q"]) for r in res.records
                   if r["group"] == "write-read" and r.get("invalidation_log", True)
                   and r.get("database") == "postgres")
    if loops:
        xs, ys, qs = zip(*loops, strict=True)
        style = {"linestyle": ":", "marker": "s", "color": "black",
                 "label": f"write then read ({WRITERS} writers), pairs/s"}
        rates.plot(xs, ys, **style)
        units.plot(xs, qs, **style)
    q_line = {"color": "grey", "linewidth": 3, "alpha": 0.6,
              "label": f"Q, the run's median: {res.q:,.0f} req/s (bare Quart app, 5 KB page)"}
    rates.axhline(res.q, **q_line)
    units.axhline(1.0, **q_line)
    units.axhline(2.0, color="grey", linewidth=1, linestyle=":", label="2 Q (cached goal)")
    if not math.isnan(res.floor_in_q):
        units.axhline(res.floor_in_q, color="tab:red", linewidth=1, linestyle="-.",
                      label=f"H (cheapest cache hit) = {res.floor_in_q:.2f} Q")
    for axes, ylabel in ((rates, "requests/s"), (units, "requests/s / Q")):
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("tasks in the table")
        axes.set_ylabel(ylabel)
        axes.grid(True, which="both", alpha=0.3)
    rates.set_title("requests/s (medians over rounds)")
    units.set_title("in Q (each against the Q runs beside it)")
    handles, labels = units.get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    figure.suptitle("Task list over HTTP (hypercorn as in production)")
    figure.tight_layout(rect=(0, 0.15, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --- main --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100,1000,10000", help="task counts")
    parser.add_argument("--seconds", type=int, default=DEFAULTS["seconds"],
                        help="length of each wrk run of a measurement")
    parser.add_argument("--rounds", type=int, default=DEFAULTS["rounds"],
                        help="rounds of each measurement, each between two Q runs (the 304 "
                        "and its cached 200 alternate within each round)")
    parser.add_argument("--q-seconds", type=int, default=None,
                        help="length of each Q and H run between measurements "
                        "(default: half of --seconds, rounded up)")
    parser.add_argument("--write-sizes", default="10,100", help="task counts of the loop")
    parser.add_argument("--write-seconds", type=int, default=DEFAULTS["write_seconds"])
    parser.add_argument("--mysql-sizes", default="100,1000",
                        help="task counts of `GET /` on MariaDB (the MySQL column)")
    parser.add_argument("--workers", type=int, default=None,
                        help="app workers (default: what hypercorn.toml says)")
    parser.add_argument("--servers", default="hypercorn",
                        help="also measure the app under uvicorn and/or granian")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"where http.json and http.png go (default {OUT.relative_to(ROOT)})")
    parser.add_argument("--no-write", action="store_true", help="leave PERFORMANCE.md alone")
    parser.add_argument("--peer", type=Path, default=None,
                        help="the tutorial app's folder: run bench/side_by_side.py first")
    parser.add_argument("--peer-venv", type=Path, default=None,
                        help="the tutorial's virtualenv (default: its setup.sh's)")
    parser.add_argument("--network-delay-ms", type=float, default=1.25,
                        help="the side-by-side's delayed network, each way")
    parser.add_argument("--smoke", action="store_true",
                        help="size 150 (on MariaDB too), 1 s runs, 1 round, a Q run only every "
                        f"{SMOKE_PAIR_EVERY} rounds; writes no docs")
    args = parser.parse_args(argv)
    args.command = " ".join([".venv/bin/python", SCRIPT, *sys.argv[1:]])
    if args.smoke:
        # One size, above a page (so the next page is measured), for make test's time: each
        # size is 13 measurements. The full run's sizes up to a page (10, 100) also take
        # the "no next page" path, which the smoke run no longer does.
        args.sizes, args.write_sizes, args.seconds = "150", "10", 1
        args.mysql_sizes = "150"  # the size PostgreSQL was measured at: a MySQL row beside it
        args.write_seconds, args.rounds, args.no_write = 1, 1, True
        args.out = args.out or Path(tempfile.mkdtemp(prefix="bench-http-smoke-"))
    args.pair_every = SMOKE_PAIR_EVERY if args.smoke else 1
    args.q_seconds = args.q_seconds or max(1, math.ceil(args.seconds / 2))
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.write_sizes = [int(s) for s in args.write_sizes.split(",")]
    args.mysql_sizes = [int(s) for s in args.mysql_sizes.split(",")]
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    args.out = args.out or OUT
    return args


@contextmanager
def started_services() -> Iterator[Services]:
    """A migrated PostgreSQL database, a MariaDB one and a memcached, gone afterwards."""
    with ExitStack() as stack:
        try:
            database_url = create_postgres_database()
            stack.callback(drop_postgres_database, database_url)
            mariadb_url = create_mariadb_database()
            stack.callback(drop_mariadb_database, mariadb_url)
            memcached = MemcachedProcess().start()
            stack.callback(memcached.kill)
        except (pytest.fail.Exception, pytest.skip.Exception) as error:  # the tests' helpers
            sys.exit(str(error))
        yield from _migrated(Services(database_url, memcached, Path(), mariadb_url))


def _migrated(services: Services) -> Iterator[Services]:
    logs = Path(tempfile.mkdtemp(prefix="bench-http-logs-"))
    try:
        run_alembic(services.database_url, ("upgrade", "head"))
        run_alembic(services.mariadb_url, ("upgrade", "head"))
        yield replace(services, logs=logs)
    except BaseException:
        print(f"The servers' logs are kept in {logs}", file=sys.stderr, flush=True)
        raise
    else:
        shutil.rmtree(logs, ignore_errors=True)


def measure(args: argparse.Namespace,
            services: Services) -> tuple[list[Record], list[Record], Record]:
    """The records, the baseline slots and what the run was on."""
    meta: Record = {
        "command": args.command, "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "sizes": args.sizes, "seconds": args.seconds, "rounds": args.rounds,
        "q_seconds": args.q_seconds, "pair_every": args.pair_every,
        "write_sizes": args.write_sizes, "write_seconds": args.write_seconds,
        "threads": THREADS, "connections": CONNECTIONS, "workers": args.workers,
        "server_size": server_size(args), "hypercorn_toml": production_config(),
        "versions": versions(services.database_url, services.mariadb_url),
        "machine": describe_machine(), "mysql_sizes": args.mysql_sizes,
        "peer": str(args.peer) if args.peer else None,
    }
    print(json.dumps({k: meta[k] for k in ("versions", "machine")}, indent=1), flush=True)
    servers = {app_loop: baseline_server(services, *app_loop) for app_loop in BASELINES}
    cached = app_server(services, "hypercorn", True, args.workers)
    uncached = app_server(services, "hypercorn", False, args.workers)
    run = Run(args, services, servers[Q_CASE], servers[FLOOR_CASE])
    with running(*servers.values(), cached, uncached):  # Q and H stay up to the end
        baselines(run, servers, "at the start")
        stop_all([server for app_loop, server in servers.items()
                  if app_loop not in (Q_CASE, FLOOR_CASE)])
        sizes_loop(run, cached, uncached)
        stop_all([cached, uncached])
        other_servers(run)
        for tasks in args.write_sizes:
            run.add(write_then_read(run, tasks), f"write then read, {tasks} tasks at start")
            run.add(write_then_read(run, tasks, invalidation_log=False),
                    f"write then read, {tasks} tasks at start, INVALIDATION_LOG=0")
        mysql_column(run)
    return run.records, run.slots, meta


def save(args: argparse.Namespace, records: list[Record], slots: list[Record],
         meta: Record) -> str:
    res = Results(records, slots)
    text = render(res, meta)
    args.out.mkdir(parents=True, exist_ok=True)
    document = {**meta,
                "q": {"app": Q_CASE, "median": res.q, "runs": res.q_runs,
                      "seconds": meta["q_seconds"]},
                "floor": {"app": FLOOR_CASE, "median": res.floor, "runs": res.floor_runs,
                          "in_q": res.floor_in_q},
                "slots": slots, "diagnostics": [asdict(g) for g in diagnostics(res)],
                "cases": records}
    (args.out / "http.json").write_text(json.dumps(document, indent=1) + "\n")
    chart(res, args.out / "http.png")
    if not args.no_write:
        write_results(SCRIPT, HEADING, text)
    return text


def side_by_side_args(args: argparse.Namespace) -> list[str]:
    """bench/side_by_side.py's arguments for this run: its sizes are ours up to 1,000 tasks
    (the tutorial renders its whole table)."""
    sizes = [n for n in args.sizes if n <= 1000] or [min(args.sizes)]
    argv = ["--peer", str(args.peer), "--sizes", ",".join(map(str, sizes)),
            "--seconds", str(args.seconds), "--rounds", str(args.rounds),
            "--delay-ms", str(args.network_delay_ms), "--out", str(args.out)]
    argv += ["--peer-venv", str(args.peer_venv)] if args.peer_venv else []
    return argv + (["--no-write"] if args.no_write else [])


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if not shutil.which(WRK):
        sys.exit(f"{WRK} is missing: apt-get install wrk (make bench installs it)")
    if args.peer:
        side_by_side.main(side_by_side_args(args), command=args.command)
    else:
        print("The side-by-side with the tutorial app is not run: no --peer.", flush=True)
    with started_services() as services:
        records, slots, meta = measure(args, services)
    text = save(args, records, slots, meta)
    print(text)
    written = "" if args.no_write else f" and {DOC.relative_to(ROOT)}"
    print(f"\nWrote {args.out / 'http.json'}, {args.out / 'http.png'}{written}.", flush=True)


if __name__ == "__main__":
    main()

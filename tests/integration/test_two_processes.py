"""Two app processes, one memcached, one PostgreSQL database: the cache must never serve a
read that is older than a write which completed before the read was sent. The main
freshness test runs on MariaDB too; on PostgreSQL its commits are slowed (`SLOW_COMMIT`), so
that a bump sent before its commit is caught in nearly every run, not once in a while.

Everything is real: two `hypercorn 'app:create_app()'` processes on free ports (configured
by the environment only, as deployed), a memcached process and a fresh PostgreSQL (or
MariaDB) database migrated by Alembic. No mocks. HTTP through httpx with keep-alive
connections.

Freshness is checked against what the test knows for certain when it sends a read:
- every task whose `POST` has answered is listed (`GET /` and the API page that holds it),
  and the API's `total` lies between the creates answered before the read and the creates
  sent before its answer (other writers run concurrently);
- the task this pair renamed carries exactly the new name, `done` flag and notes, on `GET /`
  (its notes rendered from their Markdown, a cached fragment), in the API list and on
  `GET /api/tasks/<id>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.tasks.repository import TASK
from tests.support.databases import create_postgres_database, drop_postgres_database, run_alembic
from tests.support.mariadb import create_mariadb_database, drop_mariadb_database
from tests.support.memcached import MemcachedProcess
from tests.support.servers import CLIENT_LIMITS, LiveServer

ROUNDS = 500
# The same code on MariaDB, as a check that it holds there too: shorter, for make test's time.
MARIADB_ROUNDS = 250
# On PostgreSQL every commit that writes a task takes this much longer (a deferred trigger
# sleeps at COMMIT), as over a slow network or with synchronous replication. A write whose
# bump reaches the cache before its commit is visible then leaves readers that whole time
# to cache the old rows under the new token; with commits of a millisecond, 500 rounds
# caught that bug once.
SLOW_COMMIT = 0.02
PAIRS = 8
READERS = 4
PAGE = 100
# Keeps the memcached-outage test short: a server marked dead is re-probed after 3 s
# instead of 30 s (the retry timeout after the first failures stays at its 2 s default).
DEAD_TIMEOUT = "3"

ROW = re.compile(r'<li id="task-(\d+)" class="task( done)?">')
ROW_NAME = re.compile(r'id="task-(\d+)-name" name="name" value="([^"]*)"')
ROW_NOTES = re.compile(r'<div class="notes-text"><p><strong>([^<]*)</strong></p>')


def page_notes(html: str) -> dict[int, str | None]:
    """Each row's rendered notes (the `**...**` a pair writes), None for a row without."""
    notes: dict[int, str | None] = {}
    for chunk in html.split('<li id="task-')[1:]:
        task_id, _, rest = chunk.partition('"')
        if task_id.isdigit():
            found = ROW_NOTES.search(rest.split("</details>", 1)[0])
            notes[int(task_id)] = found.group(1) if found else None
    return notes


@dataclass
class Cluster:
    database_url: str
    memcached: MemcachedProcess
    servers: tuple[LiveServer, LiveServer]

    @property
    def urls(self) -> tuple[str, str]:
        return self.servers[0].url, self.servers[1].url

    def logs(self) -> str:
        return "\n".join(f"--- {s.url} log:\n{s.log_text(4000)}" for s in self.servers)


POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres, id="postgres")
MARIADB = pytest.param("mariadb", marks=pytest.mark.mariadb, id="mariadb")
SERVERS = {
    "postgres": (create_postgres_database, drop_postgres_database),
    "mariadb": (create_mariadb_database, drop_mariadb_database),
}
ON_POSTGRES = pytest.mark.parametrize("cluster", [POSTGRES], indirect=True)


@pytest.fixture(scope="module")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    """Two processes on the database a test asks for (indirect parametrization)."""
    create, drop = SERVERS[request.param]
    yield from two_processes(tmp_path_factory, create, drop)


def two_processes(
    tmp_path_factory: pytest.TempPathFactory,
    create: Callable[[], str],
    drop: Callable[[str], None],
) -> Iterator[Cluster]:
    url = create()
    memcached: MemcachedProcess | None = None
    servers: list[LiveServer] = []
    try:
        run_alembic(url, ("upgrade", "head"))
        memcached = MemcachedProcess().start()
        logs = tmp_path_factory.mktemp("two-processes")
        env = {
            "APP_ENV": "development",
            "DATABASE_URL": url,
            "MEMCACHIER_SERVERS": memcached.address,
            "CACHE_DEAD_TIMEOUT": DEAD_TIMEOUT,
        }
        for name in ("a", "b"):
            servers.append(LiveServer(env, log=logs / f"server-{name}.log").start())
        yield Cluster(url, memcached, (servers[0], servers[1]))
    finally:
        for server in servers:
            server.stop()
        if memcached is not None:
            memcached.kill()
        drop(url)


# --- bookkeeping --------------------------------------------------------------------------


@dataclass
class Ledger:
    """What every pair knows for certain, shared by the pairs, and what went wrong."""

    existing: int = 0  # tasks in the database when the run started (nothing in flight)
    created: dict[int, str] = field(default_factory=dict)  # id -> name, POST answered
    creates_sent: int = 0
    creates_answered: int = 0
    stale: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    x_cache: Counter[tuple[str, str]] = field(default_factory=Counter)  # (server, state)
    requests: int = 0

    def seen(self, server: str, response: httpx.Response) -> None:
        self.requests += 1
        self.x_cache[server, response.headers.get("x-cache", "none")] += 1
        if response.status_code >= 500:
            self.errors.append(
                f"{response.request.method} {response.request.url} -> {response.status_code}: "
                f"{response.text[:300]}"
            )

    def hits(self, server: str | None = None) -> int:
        return sum(n for (s, state), n in self.x_cache.items()
                   if state == "hit" and server in (None, s))


def unique_name(pair: int, round_: int) -> str:
    return f"p{pair}-r{round_}-{uuid.uuid4().hex[:8]}"


def describe(response: httpx.Response) -> str:
    return (f"{response.request.method} {response.request.url} -> {response.status_code} "
            f"X-Cache={response.headers.get('x-cache')} ETag={response.headers.get('etag')}")


async def request(
    client: httpx.AsyncClient, ledger: Ledger, method: str, url: str, **kwargs: Any
) -> httpx.Response:
    response = await client.request(method, url, **kwargs)
    ledger.seen(url.split("/", 3)[2], response)
    return response


# --- one write, then reads through the other process ----------------------------------------


@dataclass
class Pair:
    """A writer/reader pair: creates tasks and renames its own task, alternating servers."""

    index: int
    client: httpx.AsyncClient
    ledger: Ledger
    own_id: int = 0
    own_name: str = ""
    own_done: bool = False

    async def create(self, writer: str, round_: int) -> tuple[int, str]:
        name = unique_name(self.index, round_)
        self.ledger.creates_sent += 1
        response = await request(self.client, self.ledger, "POST", f"{writer}/api/tasks",
                                 json={"name": name})
        assert response.status_code == 201, describe(response)
        task = response.json()
        self.ledger.created[task["id"]] = name
        self.ledger.creates_answered += 1
        return task["id"], name

    async def rename(self, writer: str, round_: int) -> None:
        """Rename, (un)complete and change the notes of this pair's task: its notes are
        the new name in bold, so a stale notes fragment shows an older name."""
        name, done = unique_name(self.index, round_), not self.own_done
        response = await request(self.client, self.ledger, "PATCH",
                                 f"{writer}/api/tasks/{self.own_id}",
                                 json={"name": name, "done": done, "notes": f"**{name}**"})
        assert response.status_code == 200, describe(response)
        self.own_name, self.own_done = name, done

    async def round(self, round_: int, servers: tuple[str, str]) -> None:
        writer, reader = servers[(self.index + round_) % 2], servers[(self.index + round_ + 1) % 2]
        where = f"round {round_} of pair {self.index}: write via {writer}, read via {reader}"
        if round_ % 2 == 0:
            task_id, name = await self.create(writer, round_)
            await self.check_reads(reader, task_id, name, None, where, single=False)
        else:
            await self.rename(writer, round_)
            await self.check_reads(reader, self.own_id, self.own_name, self.own_done, where,
                                   single=True)

    async def check_reads(
        self, reader: str, task_id: int, name: str, done: bool | None, where: str, *,
        single: bool,
    ) -> None:
        ledger = self.ledger
        known = set(ledger.created)
        answered = ledger.existing + ledger.creates_answered
        expected: dict[str, Any] = {"name": name}
        if done is not None:
            expected.update(done=done, notes=f"**{name}**")

        if single:
            response = await request(self.client, ledger, "GET", f"{reader}/api/tasks/{task_id}")
            body = response.json() if response.status_code == 200 else {}
            got = {k: body.get(k) for k in expected}
            if got != expected:
                ledger.stale.append(
                    f"{where}: single task {got} != {expected}; {describe(response)}")

        # HTML: the page that starts at this pair's task (the first page, newest first, for
        # a create) lists every answered create from its oldest row up to that task, and
        # this pair's task under exactly its new name.
        path = f"/?before={task_id + 1}" if single else "/"
        response = await request(self.client, ledger, "GET", reader + path)
        page_names = {int(i): n for i, n in ROW_NAME.findall(response.text)}
        page_done = {int(i): bool(d) for i, d in ROW.findall(response.text)}
        oldest = min(page_names, default=0) if 'rel="next"' in response.text else 0
        ceiling = task_id if single else max(known, default=0)
        missing = {i for i in known if oldest <= i <= ceiling} - page_names.keys()
        got = {"name": page_names.get(task_id), "done": page_done.get(task_id),
               "notes": f"**{page_notes(response.text).get(task_id)}**"}
        got = {k: got[k] for k in expected}
        if response.status_code != 200 or missing or got != expected:
            ledger.stale.append(
                f"{where}: GET / missing {sorted(missing)[:5]} (of {len(missing)}), "
                f"task {task_id} {got} != {expected}; {describe(response)}")

        # API list: the page holding task_id. Ids are dense and the list is ordered by id, so
        # task i sits at index i - 1 - g, g counting the smaller ids not (yet) committed:
        # other pairs' creates in flight, and creates cut off by a cancelled round (< 20).
        offset = max(0, task_id - PAGE // 2)
        response = await request(self.client, ledger, "GET",
                                 f"{reader}/api/tasks?limit={PAGE}&offset={offset}")
        data: dict[str, Any] = (response.json() if response.status_code == 200
                                else {"items": [], "total": -1})
        sent_by_now = ledger.existing + ledger.creates_sent
        items = {item["id"]: item for item in data["items"]}
        item = items.get(task_id, {})
        got = {k: item.get(k) for k in expected}
        window = {i for i in known if offset + 20 < i <= offset + 70}  # surely on this page
        missing = window - items.keys()
        if got != expected or missing or not answered <= data["total"] <= sent_by_now:
            ledger.stale.append(
                f"{where}: API page offset {offset}: task {task_id} {got} != {expected}, "
                f"missing {sorted(missing)[:5]}, total {data['total']} not in "
                f"[{answered}, {sent_by_now}]; {describe(response)}")


def dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(False)


@contextlib.asynccontextmanager
async def slow_commits(database_url: str, seconds: float) -> AsyncIterator[None]:
    """Until the block ends, each PostgreSQL transaction that writes table `task` sleeps
    `seconds` in its COMMIT, before what it wrote becomes visible."""
    connection = await asyncpg.connect(dsn(database_url))
    try:
        await connection.execute(f"""
            CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep({seconds}); RETURN NULL; END $$;
            CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT OR UPDATE OR DELETE ON task
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();
        """)
        yield
    finally:
        await connection.execute("DROP FUNCTION slow_commit() CASCADE")
        await connection.close()


async def new_ledger(cluster: Cluster) -> Ledger:
    engine = create_async_engine(cluster.database_url)
    try:
        async with engine.connect() as connection:
            existing = await connection.scalar(select(func.count()).select_from(TASK))
    finally:
        await engine.dispose()
    assert existing is not None
    return Ledger(existing=existing)


async def run_pairs(
    servers: tuple[str, str], ledger: Ledger, rounds: int, pairs: int,
    stop_after: asyncio.Event | None = None,
) -> None:
    """`rounds` rounds in total, spread over `pairs` concurrent pairs."""
    counter = itertools.count()

    async def work(pair: Pair) -> None:
        pair.own_id, pair.own_name = await pair.create(servers[pair.index % 2], -1)
        while (round_ := next(counter)) < rounds:
            await pair.round(round_, servers)

    async with httpx.AsyncClient(timeout=30, limits=CLIENT_LIMITS) as client:
        await asyncio.gather(*(work(Pair(i, client, ledger)) for i in range(pairs)))


async def background_readers(servers: tuple[str, str], ledger: Ledger, stop: asyncio.Event,
                             readers: int = READERS) -> None:
    """Hammer both servers with the same reads meanwhile, so that the cache is hot and a
    reader refilling an entry races the writers for real."""

    async def read(client: httpx.AsyncClient, seed: int) -> None:
        rng = random.Random(seed)
        while not stop.is_set():
            server = rng.choice(servers)
            ids = list(ledger.created) or [1]
            path = rng.choice(
                ["/", "/api/tasks?limit=100&offset=0", f"/api/tasks/{rng.choice(ids)}"]
            )
            response = await request(client, ledger, "GET", server + path)
            if response.status_code not in (200, 404):
                ledger.errors.append(describe(response))

    async with httpx.AsyncClient(timeout=30, limits=CLIENT_LIMITS) as client:
        await asyncio.gather(*(read(client, seed) for seed in range(readers)))


def report(ledger: Ledger) -> str:
    return (f"{ledger.requests} requests, X-Cache {dict(ledger.x_cache)}; "
            f"stale reads: {len(ledger.stale)}; server errors: {len(ledger.errors)}\n"
            + "\n".join((ledger.stale + ledger.errors)[:20]))


# --- the tests ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cluster", [POSTGRES, MARIADB], indirect=True)
async def test_writes_through_one_process_are_read_fresh_through_the_other(
    cluster: Cluster,
) -> None:
    ledger = await new_ledger(cluster)
    stop = asyncio.Event()
    readers = asyncio.create_task(background_readers(cluster.urls, ledger, stop))
    on_mysql = cluster.database_url.startswith("mysql")
    rounds = MARIADB_ROUNDS if on_mysql else ROUNDS
    started = time.monotonic()
    try:
        if on_mysql:  # no deferred triggers: commits as fast as they come
            await run_pairs(cluster.urls, ledger, rounds, PAIRS)
        else:
            async with slow_commits(cluster.database_url, SLOW_COMMIT):
                await run_pairs(cluster.urls, ledger, rounds, PAIRS)
    finally:
        stop.set()
        await readers
    elapsed = time.monotonic() - started

    assert ledger.stale == [], report(ledger)
    assert ledger.errors == [], report(ledger)
    # The cache was really used, by both processes: caching off could not pass this.
    for server in cluster.urls:
        assert ledger.hits(server.split("/", 3)[2]) >= 100, report(ledger)
    print(f"\n{rounds} rounds with {PAIRS} pairs in {elapsed:.1f} s; {report(ledger)}")


async def scans_of_task(database_url: str) -> int:
    """Exact number of scans (sequential + index) of table `task` so far.

    The statistics a backend collects are only pending in its own memory until it flushes
    them, which an idle backend may put off for up to 10 s (PostgreSQL 15's
    PGSTAT_IDLE_INTERVAL); a backend that exits flushes them first. So every other backend
    on this database (the apps' pooled connections: the apps find them dead on first use
    and retry on fresh ones, which this also tests) is terminated, we wait until they are
    gone, and only then read `pg_stat_user_tables` in a fresh snapshot. Nothing else reads
    table `task`: an INSERT scans nothing (the writes that make the list cold happen
    before each baseline anyway), nor do the backends that connect meanwhile (the apps'
    invalidation log couriers, which poll their own table and listen).
    """
    connection = await asyncpg.connect(dsn(database_url))
    try:
        pids = [row["pid"] for row in await connection.fetch(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )]
        await connection.execute(
            "SELECT pg_terminate_backend(pid) FROM unnest($1::int[]) AS pid", pids
        )
        deadline = time.monotonic() + 10
        while await connection.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = any($1::int[])", pids
        ):
            assert time.monotonic() < deadline, "the apps' backends did not exit"
            await asyncio.sleep(0.02)
        await connection.execute("SELECT pg_stat_clear_snapshot()")
        scans: int = await connection.fetchval(
            "SELECT seq_scan + coalesce(idx_scan, 0) FROM pg_stat_user_tables "
            "WHERE relname = 'task'"
        )
        return scans
    finally:
        await connection.close()


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes


async def simultaneous_gets(urls: list[str]) -> list[RawResponse]:
    """GET every URL at the same moment: all connections are opened first, then every
    request is written in one go, then the answers are read. (An HTTP client sending 100
    requests one after another spreads them over tens of milliseconds, long enough for the
    first answer to be cached before the last request leaves.)"""
    streams = []
    for url in urls:
        parsed = httpx.URL(url)
        reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
        request_bytes = (f"GET {parsed.raw_path.decode()} HTTP/1.1\r\n"
                         f"Host: {parsed.netloc.decode()}\r\nConnection: close\r\n\r\n").encode()
        streams.append((reader, writer, request_bytes))
    for _, writer, request_bytes in streams:
        writer.write(request_bytes)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> RawResponse:
        try:
            raw = await reader.read()  # Connection: close
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines)
        return RawResponse(int(status_line.split()[1]), headers, body)

    return await asyncio.gather(*(answer(reader, writer) for reader, writer, _ in streams))


@ON_POSTGRES
async def test_a_cold_list_is_loaded_at_most_once_per_process_under_a_stampede(
    cluster: Cluster,
) -> None:
    a, b = cluster.urls
    async with httpx.AsyncClient(timeout=30, limits=CLIENT_LIMITS) as client:

        async def cold() -> None:
            response = await client.post(f"{a}/api/tasks", json={"name": uuid.uuid4().hex})
            assert response.status_code == 201, response.text

        # Calibrate: how many scans one load of the list costs (page + count).
        await cold()
        before = await scans_of_task(cluster.database_url)
        response = await client.get(f"{b}/api/tasks")
        assert response.headers["x-cache"] == "miss"
        per_load = await scans_of_task(cluster.database_url) - before
        assert per_load >= 1

        # The stampede: a fresh generation, then 100 simultaneous reads over both processes.
        await cold()
        before = await scans_of_task(cluster.database_url)
        responses = await simultaneous_gets([f"{(a, b)[i % 2]}/api/tasks" for i in range(100)])
        scans = await scans_of_task(cluster.database_url) - before

    assert [r.status for r in responses] == [200] * 100
    totals = {json.loads(r.body)["total"] for r in responses}
    assert len(totals) == 1, totals
    loads = scans / per_load
    print(f"\nstampede: {scans} scans = {loads} loads ({per_load} scans per load); "
          f"X-Cache {Counter(r.headers['x-cache'] for r in responses)}")
    assert scans % per_load == 0, (scans, per_load)
    assert loads <= 2, f"the list was loaded {loads} times by 100 simultaneous requests"


@ON_POSTGRES
async def test_killing_memcached_mid_run_never_fails_a_request_or_serves_stale_data(
    cluster: Cluster,
) -> None:
    ledger = await new_ledger(cluster)
    stop = asyncio.Event()
    readers = asyncio.create_task(background_readers(cluster.urls, ledger, stop, readers=2))
    phases: dict[str, int] = {}
    try:
        await run_pairs(cluster.urls, ledger, 40, 4)  # warm, hits
        phases["before"] = ledger.requests
        cluster.memcached.kill()
        outage = asyncio.create_task(run_pairs(cluster.urls, ledger, 10_000, 4))
        await asyncio.sleep(3)
        cluster.memcached.start()  # same port, empty
        phases["down"] = ledger.requests - phases["before"]
        # Rounds go on while the processes find the server again (their own retry and
        # dead timeouts), and a few more once both serve hits from it again.
        hits = {url: ledger.hits(url.split("/", 3)[2]) for url in cluster.urls}
        deadline = time.monotonic() + 20
        while not all(ledger.hits(url.split("/", 3)[2]) > hits[url] + 20 for url in cluster.urls):
            assert time.monotonic() < deadline, f"the cache did not come back: {report(ledger)}"
            assert not outage.done() or outage.exception() is None, outage.exception()
            await asyncio.sleep(0.1)
        outage.cancel()
        await asyncio.gather(outage, return_exceptions=True)
        await run_pairs(cluster.urls, ledger, 40, 4)
    finally:
        stop.set()
        await readers
        if not cluster.memcached.running:
            cluster.memcached.start()

    assert phases["down"] > 50, phases
    assert ledger.errors == [], report(ledger)
    assert ledger.stale == [], report(ledger)
    print(f"\nmemcached outage: {phases}; {report(ledger)}")


@ON_POSTGRES
async def test_a_write_through_a_process_that_counts_memcached_dead_is_not_hidden_by_the_other(
    cluster: Cluster,
) -> None:
    """After an outage each process re-probes memcached on its own timer. Here A notices the
    outage 2.5 s before B, so A is back (its probe flushed the server) while B still counts
    it dead. B's generation bumps must still reach the server (they are urgent writes),
    or A would serve what it cached just before, for up to the dead timeout (30 s).

    Timeline (retry 2 s, 3 failures, dead 3 s): A fails at 0, 2, 4 (dead until 7);
    B fails at 2.5, 4.5, 6.5 (dead until 9.5); memcached is back at 6.75; A probes at 7.
    """
    a, b = cluster.urls
    async with httpx.AsyncClient(timeout=30, limits=CLIENT_LIMITS) as client:
        task = (await client.post(f"{b}/api/tasks", json={"name": "v0"})).json()
        url = f"/api/tasks/{task['id']}"
        cluster.memcached.kill()
        start = time.monotonic()

        async def poke(server: str, since: float, until: float) -> None:
            await asyncio.sleep(since)
            while time.monotonic() - start < until:
                assert (await client.get(server + url)).status_code == 200
                await asyncio.sleep(0.05)

        async def restart(at: float) -> None:
            await asyncio.sleep(at)
            cluster.memcached.start()

        try:
            await asyncio.gather(poke(a, 0, 7.2), poke(b, 2.5, 7.2), restart(6.75))
        finally:
            if not cluster.memcached.running:
                cluster.memcached.start()
        stale = []
        for i in range(1, 100):
            if time.monotonic() - start > 9.0:
                break
            await client.get(a + url)  # A caches the task
            assert (await client.patch(b + url, json={"name": f"v{i}"})).status_code == 200
            read = await client.get(a + url)
            if read.json()["name"] != f"v{i}":
                stale.append(f"t+{time.monotonic() - start:.1f}s: wrote v{i} through B, "
                             f"read {read.json()['name']} through A ({describe(read)})")
            await asyncio.sleep(0.05)
    assert stale == [], "\n".join(stale)

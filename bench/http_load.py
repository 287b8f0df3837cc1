"""The HTTP benchmark's load: wrk in rounds paired with baseline runs, and the write loop.

Every figure is also given in Q, the rate of a bare Quart app serving a constant 5 KB page
(bench/baselines.py). The machine drifts, so a `Run` keeps the Q server up and measures a
short Q run (a slot) between every two measurements (every `pair_every`); a round's ratio
is its rate over the mean of the Q runs just before and after it, a measurement's the median
over its `--rounds` rounds. Cached measurements are likewise paired with H, the cheapest
cache hit (`hit_floor_app` under uvloop). A cached measurement starts once a probe sees
`X-Cache: hit`. `write_then_read` runs `WRITERS` httpx clients that each POST through one
app process and at once GET / through another, counting stale reads.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import secrets
import statistics
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin

import httpx

from bench.harness import Probe, Record, Server, WrkResult, percentile, probe, running, warm, wrk
from bench.http_servers import Services, app_server, seed
from bench.write_read import PairLog
from tests.support.servers import ServerFailed

WRITERS = 8
GZIP = (("Accept-Encoding", "gzip"),)
HTMX = (("HX-Request", "true"), ("HX-Request-Type", "partial"))
NEXT_PAGE = "<the first page's rel=next link>"


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
        return float(statistics.median(getattr(r, key) for r in results))

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
        log.read(time.monotonic() - started, name, page.status_code, page.headers.get("x-cache"),
                 name in page.text, f" via {read_url}")


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


def per_round(r: Record) -> str:
    return ", ".join(f"{e['in_q']:.2f}" for e in r["per_round"])

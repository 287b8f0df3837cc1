"""Round trips to the database and memcached per request, counted.

Each app server (one worker) reaches PostgreSQL and memcached through routes of its own on
bench/delay_proxy.py at 0 delay (a pure counting proxy), and gets requests one at a time,
`PAUSE` apart. A request's round trips *before* the answer are the turns that began between
its start and the answer's status line and headers reaching the client (both apps render a
page whole before they send any of it); *after* are those up to the next request (work the
app does once it has answered: a cache store, say, which may start while the client is
still reading a large page); new connections are those opened from its start to the next
request's. Both clocks are CLOCK_MONOTONIC. Figures are medians over the
requests of a path (a background poll now and then lands in one request's window; the idle
rate of each server, measured with no request, says how often).

Paths: cached `GET /` (a hit), uncached `GET /` (cache off), the write (this app's
`POST /api/tasks`, the tutorial's `POST /`) and `GET /` right after a write (cache on; the
write, a pause, then the read).
"""

from __future__ import annotations

import http.client
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from bench.apps import OURS, PEER, Services
from bench.delay_proxy import DelayProxy
from bench.harness import Record, Server, probe, running, warm

REQUESTS = 20
PAUSE = 0.05  # seconds between two requests
IDLE = 2.0  # seconds with no request, to measure the background rate
CACHED, UNCACHED, WRITE, AFTER_WRITE = ("cached GET /", "uncached GET /", "write",
                                        "GET / after a write")
PATHS = (CACHED, UNCACHED, WRITE, AFTER_WRITE)
COUNTS = ("db_before", "mc_before", "db_after", "mc_after", "db_connections",
          "mc_connections")


@dataclass(frozen=True)
class Call:
    """One request of a series, and what it is counted as."""

    path: str  # one of PATHS
    method: str = "GET"
    target: str = "/"
    body: bytes = b""
    content_type: str = ""


@dataclass
class Timed:
    call: Call
    started: float
    answered: float  # the status line and headers in
    done: float  # the whole body in
    status: int


def write_call(app: str, number: int) -> Call:
    name = f"round-trip-{number}"
    if app == OURS:
        return Call(WRITE, "POST", "/api/tasks", json.dumps({"name": name}).encode(),
                    "application/json")
    return Call(WRITE, "POST", "/", urlencode({"name": name}).encode(),
                "application/x-www-form-urlencoded")


def send(server: Server, calls: Sequence[Call]) -> tuple[list[Timed], float]:
    """`calls` one at a time, `PAUSE` apart (and after the last): each timed with
    time.monotonic() from before its request to its answer's headers, and to its whole
    body; and the end."""
    host, _, port = server.url.removeprefix("http://").rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    timed = []
    try:
        for call in calls:
            headers = {"Content-Type": call.content_type} if call.body else {}
            started = time.monotonic()
            connection.request(call.method, call.target, body=call.body, headers=headers)
            response = connection.getresponse()
            answered = time.monotonic()
            response.read()
            timed.append(Timed(call, started, answered, time.monotonic(), response.status))
            time.sleep(PAUSE)
    finally:
        connection.close()
    return timed, time.monotonic()


def attribute(timed: Sequence[Timed], end: float, db: Record, mc: Record) -> list[Record]:
    """Per request: the turns of each route before and after its answer, and the new
    connections from its start to the next request's."""
    rows = []
    for i, t in enumerate(timed):
        following = timed[i + 1].started if i + 1 < len(timed) else end

        def count(times: list[float], start: float, stop: float) -> int:
            return sum(start <= x < stop for x in times)

        rows.append({"path": t.call.path, "status": t.status,
                     "ms": 1000 * (t.done - t.started),
                     "db_before": count(db["turns"], t.started, t.answered),
                     "mc_before": count(mc["turns"], t.started, t.answered),
                     "db_after": count(db["turns"], t.answered, following),
                     "mc_after": count(mc["turns"], t.answered, following),
                     "db_connections": count(db["connections"], t.started, following),
                     "mc_connections": count(mc["connections"], t.started, following)})
    return rows


def summary(app: str, tasks: int, path: str, rows: Sequence[Record]) -> Record:
    """The medians (and ranges) of one path's requests."""
    mine = [r for r in rows if r["path"] == path]
    record: Record = {"app": app, "tasks": tasks, "path": path, "requests": len(mine),
                      "statuses": sorted({r["status"] for r in mine}),
                      "ms": statistics.median(r["ms"] for r in mine)}
    for key in COUNTS:
        values = [r[key] for r in mine]
        record[key] = statistics.median(values)
        record[key + "_range"] = [min(values), max(values)]
    return record


class Counted:
    """One app's two servers (cache on, cache off), each on routes of its own."""

    def __init__(self, app: str, on: Server, off: Server, key: str) -> None:
        self.app, self.on, self.off, self.key = app, on, off, key

    def routes(self, server: Server) -> tuple[str, str]:
        which = "on" if server is self.on else "off"
        return f"{self.key}-{which}-db", f"{self.key}-{which}-mc"


def measure(services: Services, sizes: Sequence[int], requests: int = REQUESTS) -> Record:
    """The round trips of every path of both apps (this app only if the run has no peer)
    at each size; and each server's background rate."""
    upstreams = {}
    keys = [("ours", OURS)] + ([("peer", PEER)] if services.peer is not None else [])
    for key, _ in keys:
        for which in ("on", "off"):
            upstreams[f"{key}-{which}-db"] = services.postgres
            upstreams[f"{key}-{which}-mc"] = services.memcached.address
    with DelayProxy(upstreams, 0) as proxy:
        apps = []
        for key, app in keys:
            make = services.ours if app == OURS else services.tutorial
            on, off = (make(f"round-trips-{key}-{which}", which == "on",
                            postgres=proxy.address(f"{key}-{which}-db"),
                            memcached=proxy.address(f"{key}-{which}-mc"), workers=1)
                       for which in ("on", "off"))
            apps.append(Counted(app, on, off, key))
        with running(*(s for a in apps for s in (a.on, a.off))):
            idle = background(proxy, apps)
            records = []
            for tasks in sizes:
                services.seed(tasks)
                for counted in apps:
                    records += series(proxy, counted, tasks, requests)
    return {"requests": requests, "pause_ms": 1000 * PAUSE, "idle": idle, "paths": records}


def background(proxy: DelayProxy, apps: Sequence[Counted]) -> list[Record]:
    """Turns per second each server makes with no request (polls, keep-alives)."""
    proxy.take()
    time.sleep(IDLE)
    counts = proxy.take()
    found = []
    for counted in apps:
        for server in (counted.on, counted.off):
            db, mc = counted.routes(server)
            found.append({"app": counted.app, "cache": "on" if server is counted.on else "off",
                          "db_per_s": len(counts[db]["turns"]) / IDLE,
                          "mc_per_s": len(counts[mc]["turns"]) / IDLE})
    return found


def series(proxy: DelayProxy, counted: Counted, tasks: int, requests: int) -> list[Record]:
    """Every path of one app at one size, `requests` times each."""
    found = []
    for server, path, calls in (
        (counted.on, CACHED, [Call(CACHED)] * requests),
        (counted.off, UNCACHED, [Call(UNCACHED)] * requests),
        (counted.on, WRITE, [c for n in range(requests)
                             for c in (write_call(counted.app, n), Call(AFTER_WRITE))]),
    ):
        if path == CACHED and counted.app == OURS:
            warm(server.url + "/", (), cache=True)
        else:
            for _ in range(3):
                probe(server.url + "/")
        proxy.take()
        timed, end = send(server, calls)
        counts = proxy.take()
        db, mc = counted.routes(server)
        rows = attribute(timed, end, counts[db], counts[mc])
        paths = dict.fromkeys(call.path for call in calls)  # in order, once each
        found += [summary(counted.app, tasks, p, rows) for p in paths]
    return found


def cell(record: Record, key: str) -> str:
    """The median, and the range when the requests differed: `1 (1-3)`."""
    low, high = record[key + "_range"]
    return f"{record[key]:g}" + (f" ({low}-{high})" if low != high else "")


def table(result: Record | None) -> list[str]:
    """The round-trip table, in markdown, with the servers' background rates."""
    if not result:
        return []
    lines = ["#### Round trips per request", "",
             f"Each app with 1 worker, PostgreSQL and memcached behind `bench/delay_proxy.py` "
             f"at 0 delay (counting only); {result['requests']} requests per path, one at a "
             f"time, {result['pause_ms']:.0f} ms apart; medians, with the range when the "
             "requests differed. Before: turns that began between the request leaving and its "
             "answer's headers arriving (both apps render a page whole before sending any of "
             "it); after: from then to the next request; connections: opened from the request "
             "to the next; time: to the whole answer.", "",
             "| path | tasks | app | database before | memcached before | database after "
             "| memcached after | new connections (db, memcached) | median time |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for path in PATHS:
        for r in (r for r in result["paths"] if r["path"] == path):
            bad = "" if r["statuses"] in ([200], [201]) else \
                f" (statuses {', '.join(map(str, r['statuses']))})"
            lines.append(f"| {path}{bad} | {r['tasks']:,} | {r['app']} | {cell(r, 'db_before')} | "
                         f"{cell(r, 'mc_before')} | {cell(r, 'db_after')} | "
                         f"{cell(r, 'mc_after')} | {cell(r, 'db_connections')}, "
                         f"{cell(r, 'mc_connections')} | {r['ms']:,.1f} ms |")
    idle = "; ".join(f"{i['app']} (cache {i['cache']}) {i['db_per_s']:g} database and "
                     f"{i['mc_per_s']:g} memcached turns/s" for i in result["idle"])
    return [*lines, "", f"With no request (background: polls, pings), over {IDLE:g} s: {idle}.",
            ""]

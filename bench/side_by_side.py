"""Benchmark: this app beside the MemCachier tutorial app, in the same run, on the same servers.

    .venv/bin/python bench/side_by_side.py [--sizes 10,100,1000] [--seconds 10] [--rounds 2]
        [--write-seconds N] [--network loopback,delayed] [--delay-ms 1.25]
        [--peer DIR] [--peer-venv VENV] [--app-root DIR] [--round-trips-only [--no-peer]]
        [--requests 20] [--no-round-trips] [--no-loops] [--out DIR] [--no-write]

The tutorial (`--peer`, default ../shared/peers/tutorial; bench/peer.py) runs from where it
is, under gunicorn with 2 sync workers; this app as production serves it (`hypercorn
--config hypercorn.toml`, 2 workers, `APP_ENV=production`) from `--app-root` (default this
repository; bench/checkout.py). Both on one PostgreSQL (a database each, seeded with the
same tasks) and one memcached, on each network: "loopback", and "delayed" (PostgreSQL and
memcached behind bench/delay_proxy.py, `--delay-ms` each way, both apps through the same
proxy; the round trip through it is measured and reported).

At each size: cached `GET /` (this app with the cache on, the tutorial in `cache` mode) and
uncached (`CACHE_ENABLED=0`, the tutorial's `nocache`): `wrk -t2 -c32` after a warm-up; then
write then read (bench/write_read.py: 8 clients, each writes a task and at once reads `GET /`,
stale reads counted), cache on and off, each round from a re-seeded table. The two apps
alternate round by round (this app first in odd rounds); rates are medians over rounds and
each figure is reported as this app / tutorial, with each round's own ratio. First, the round
trips each path makes (bench/round_trips.py; alone with `--round-trips-only`, which prints
them and writes them only into `--out`, e.g. to compare a checkout before and after a
change); last, each worker's resident size, beside the tutorial's.

Writes docs/performance/side_by_side.json and .png (or into `--out`) and its block of
docs/PERFORMANCE.md (bench/report.py), and computes the goals of issue 20 from the run.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import tomllib  # noqa: E402
from collections.abc import Iterator, Sequence  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import asdict  # noqa: E402

import asyncpg  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench import apps, peer, round_trips, write_read  # noqa: E402
from bench.apps import OURS, PEER, Services  # noqa: E402
from bench.checkout import THIS_BIN, Checkout  # noqa: E402
from bench.delay_proxy import DelayProxy  # noqa: E402
from bench.harness import (  # noqa: E402
    CONNECTIONS,
    THREADS,
    Goal,
    Record,
    Server,
    WrkResult,
    cpu_seconds,
    probe,
    running,
    warm,
    worker_rss,
    workers,
    wrk,
)
from bench.report import DOC, write_results  # noqa: E402
from tests.support.machine import describe_machine  # noqa: E402
from tests.support.memcached import free_port  # noqa: E402

SCRIPT = "bench/side_by_side.py"
HEADING = "## Beside the tutorial app"
BEFORE = "## Task list over HTTP"  # where the section goes the first time
OUT = ROOT / "docs" / "performance"
CLIENTS = 8  # write-then-read clients
PEER_WARM_GETS = 3  # the tutorial has no X-Cache header: a few GETs fill its caches
RTT_SAMPLES = 50
WRK_TIMEOUT = 30  # seconds: the tutorial's slowest pages take over wrk's default 2 s
CACHED, UNCACHED = "cached GET /", "uncached GET /"
FLOORS = ("hit_floor_app", "quart_app")  # bench/baselines.py
WRITE_ON, WRITE_OFF = "write then read, cache on", "write then read, cache off"
PATHS = (CACHED, UNCACHED, WRITE_ON, WRITE_OFF)
LOOPBACK_GOAL, DELAYED_GOAL, OWN_LOOPBACK_GOAL = 1.5, 3.0, 0.8
DEFAULTS: Record = {"sizes": [10, 100, 1000], "seconds": 10, "rounds": 2,
                    "network": ["loopback", "delayed"], "delay_ms": 1.25}


class Progress:
    """Numbered, timed progress lines."""

    def __init__(self) -> None:
        self.started, self.step = time.monotonic(), 0

    def __call__(self, text: str) -> None:
        self.step += 1
        minutes, seconds = divmod(round(time.monotonic() - self.started), 60)
        print(f"[{self.step} {minutes}:{seconds:02}] {text}", flush=True)


# --- networks ----------------------------------------------------------------------------


@contextmanager
def network(services: Services, name: str, delay_ms: float) -> Iterator[Record]:
    """Where the apps find PostgreSQL and memcached on network `name`, and its measured round
    trips (none on loopback)."""
    if name == "loopback":
        yield {"name": name, "postgres": services.postgres,
               "memcached": services.memcached.address}
        return
    if name != "delayed":
        raise ValueError(f"unknown network {name!r}: loopback or delayed")
    upstreams = {"db": services.postgres, "mc": services.memcached.address}
    with DelayProxy(upstreams, delay_ms) as proxy:
        net = {"name": name, "postgres": proxy.address("db"),
               "memcached": proxy.address("mc"), "delay_ms": delay_ms,
               "round_trip_ms": measured_round_trips(services, proxy)}
        cpu, started = cpu_seconds([proxy.pid]), time.monotonic()
        yield net
        net["proxy_cpu"] = (cpu_seconds([proxy.pid]) - cpu) / (time.monotonic() - started)


def measured_round_trips(services: Services, proxy: DelayProxy) -> Record:
    """Median round trip through the proxy: memcached's `version`, PostgreSQL's `SELECT 1`
    (each on one open connection, `RTT_SAMPLES` times)."""
    host, _, port = proxy.address("mc").rpartition(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        trips = []
        for _ in range(RTT_SAMPLES):
            started = time.perf_counter()
            sock.sendall(b"version\r\n")
            sock.recv(100)
            trips.append(time.perf_counter() - started)

    async def postgres() -> list[float]:
        url = apps.at(services.database_url, proxy.address("db"))
        connection = await asyncpg.connect(
            make_url(url).set(drivername="postgresql").render_as_string(False))
        found = []
        try:
            for _ in range(RTT_SAMPLES):
                started = time.perf_counter()
                await connection.fetchval("SELECT 1")
                found.append(time.perf_counter() - started)
        finally:
            await connection.close()
        return found

    return {"memcached": 1000 * statistics.median(trips),
            "postgres": 1000 * statistics.median(asyncio.run(postgres()))}


# --- measuring ---------------------------------------------------------------------------


def alternating(rounds: int) -> Iterator[tuple[int, tuple[str, str]]]:
    """Each round's order: this app first in odd rounds, the tutorial first in even ones."""
    for number in range(1, rounds + 1):
        yield number, (OURS, PEER) if number % 2 else (PEER, OURS)


def warm_up(app: str, server: Server, cache: bool) -> Record:
    """Until this app answers a hit (cached), or a few GETs; what the last answer was."""
    if app == OURS:
        return warm(server.url + "/", (), cache).summary()
    answer = probe(server.url + "/")
    for _ in range(PEER_WARM_GETS - 1):
        answer = probe(server.url + "/")
    return answer.summary()


def measured_wrk(server: Server, seconds: int, path: str = "/") -> tuple[WrkResult, float]:
    """`wrk` on `path`, and the CPU time its workers spent per request (microseconds)."""
    pids = workers(server)
    before = cpu_seconds(pids)
    result = wrk(server.url + path, seconds, timeout=WRK_TIMEOUT)
    spent = cpu_seconds(pids) - before
    return result, 1e6 * spent / result.requests if result.requests else math.nan


def floors(services: Services, cached: Record, args: argparse.Namespace,
           say: Progress) -> list[Record]:
    """The bench/baselines.py apps served as this app is (`hypercorn --config
    hypercorn.toml`): a bare Quart app's constant page, and a bare ASGI app sending a page
    it reads with one memcached `get_many`, the least a cache hit can cost on this server.
    Beside `cached` (both apps' cached `GET /`, measured just before), they say how far any
    app on this server can be from the tutorial."""
    found = []
    servers = {app: floor_server(services, app) for app in FLOORS}
    with running(*servers.values()):
        for app, server in servers.items():
            results, cpus = [], []
            for number in range(1, args.rounds + 1):
                probe(server.url + "/")
                result, cpu = measured_wrk(server, args.seconds)
                results.append(result)
                cpus.append(cpu)
                say(f"server floor {app}: round {number}: {result.rps:,.0f} req/s")
            figures = {**rate_of(results), "cpu_us": statistics.median(cpus)}
            found.append({"app": app, "tasks": cached["tasks"], **figures,
                          "to_peer": figures["rate"] / cached["peer"]["rate"],
                          "to_ours": figures["rate"] / cached["ours"]["rate"]})
    return found


def floor_server(services: Services, app: str) -> Server:
    port = free_port()
    argv = [str(THIS_BIN / "hypercorn"), "--config", "hypercorn.toml",
            "--bind", f"127.0.0.1:{port}", f"bench.baselines:{app}"]
    env = {"BENCH_MEMCACHED": services.memcached.address}
    return Server(app, argv, port, env, services.log(app), ready_path="/", cwd=ROOT)


def rate_of(results: Sequence[WrkResult]) -> Record:
    return {"rate": statistics.median(r.rps for r in results),
            "rounds": [r.rps for r in results],
            "latency_p99_ms": statistics.median(r.latency_p99_ms for r in results),
            "requests": sum(r.requests for r in results),
            "non_2xx": sum(r.non_2xx for r in results),
            "socket_errors": sum(sum(r.socket_errors.values()) for r in results)}


def compare(record: Record, ours: Record, theirs: Record) -> Record:
    """`record` with both apps' figures, the ratio of medians and each round's ratio."""
    by_round = [a / b if b else math.inf for a, b in zip(ours["rounds"], theirs["rounds"],
                                                         strict=True)]
    ratio = ours["rate"] / theirs["rate"] if theirs["rate"] else math.inf
    return {**record, "ours": ours, "peer": theirs, "ratio": ratio, "round_ratios": by_round}


def reads(servers: dict[tuple[str, bool], Server], cache: bool, record: Record,
          args: argparse.Namespace, say: Progress) -> Record:
    """`wrk` on `GET /` of both apps, alternating round by round."""
    results: dict[str, list[WrkResult]] = {OURS: [], PEER: []}
    cpus: dict[str, list[float]] = {OURS: [], PEER: []}
    answers: dict[str, Record] = {}
    for number, order in alternating(args.rounds):
        for app in order:
            server = servers[app, cache]
            answer = warm_up(app, server, cache)  # before every round
            answers.setdefault(app, answer)  # the first is reported
            result, cpu = measured_wrk(server, args.seconds)
            results[app].append(result)
            cpus[app].append(cpu)
            say(f"{line(record)} round {number}, {app}: {result.rps:,.0f} req/s"
                + (f" ({result.notes()})" if result.notes() else ""))
    ours, theirs = rate_of(results[OURS]), rate_of(results[PEER])
    ours["cpu_us"], theirs["cpu_us"] = (statistics.median(cpus[app]) for app in (OURS, PEER))
    for app, figures in ((OURS, ours), (PEER, theirs)):
        figures["served"] = served = answers[app]
        if served["status"] != 200:
            figures["warm_up"] = f"warm-up answered {served['status']}"
        elif app == OURS and cache and served["x_cache"] != "hit":
            figures["warm_up"] = f"no hit after the warm-up (X-Cache {served['x_cache']})"
    return compare(record, ours, theirs)


def writes(services: Services, servers: dict[tuple[str, bool], Server], cache: bool,
           record: Record, args: argparse.Namespace, say: Progress) -> Record:
    """The write-then-read loop on both apps, alternating, each round from a re-seeded
    table."""
    loops: dict[str, list[Record]] = {OURS: [], PEER: []}
    for number, order in alternating(args.rounds):
        for app in order:
            services.seed_one(app, record["tasks"])
            server = servers[app, cache]
            target = write_read.Target("127.0.0.1", server.port, form=app == PEER)
            loop = write_read.loop(target, CLIENTS, args.write_seconds)
            loops[app].append(loop)
            say(f"{line(record)} round {number}, {app}: {loop['pairs_per_s']:,.1f} pairs/s, "
                f"{loop['stale']} stale, {loop['errors']} errors, "
                f"client CPU {loop['client_cpu']:.0%}")
    return compare(record, pairs_of(loops[OURS]), pairs_of(loops[PEER]))


def pairs_of(loops: Sequence[Record]) -> Record:
    return {"rate": statistics.median(loop["pairs_per_s"] for loop in loops),
            "rounds": [loop["pairs_per_s"] for loop in loops],
            "pairs": sum(loop["pairs"] for loop in loops),
            "stale": sum(loop["stale"] for loop in loops),
            "errors": sum(loop["errors"] for loop in loops),
            "client_cpu": max(loop["client_cpu"] for loop in loops),
            "pair_p50_ms": statistics.median(loop["pair_p50_ms"] for loop in loops),
            "pair_p99_ms": max(loop["pair_p99_ms"] for loop in loops),
            "examples": [e for loop in loops for e in loop["stale_examples"]
                         + loop["error_examples"]][:5]}


def line(record: Record) -> str:
    return f"{record['network']:8} {record['tasks']:5} tasks {record['path']}:"


def on_network(services: Services, net: Record, args: argparse.Namespace,
               say: Progress) -> tuple[list[Record], list[Record], list[Record]]:
    """Every path at every size on one network; then each worker's RSS. On loopback, the
    server floors too, right after the first size's cached reads (see `floors`)."""
    servers = {}
    for app, make in ((OURS, services.ours), (PEER, services.tutorial)):
        for cache in (True, False):
            name = f"{net['name']}-{'ours' if app == OURS else 'peer'}-cache-" \
                   f"{'on' if cache else 'off'}"
            servers[app, cache] = make(name, cache, postgres=net["postgres"],
                                       memcached=net["memcached"])
    records: list[Record] = []
    floor_records: list[Record] = []
    with running(*servers.values()):
        for tasks in args.sizes:
            services.seed(tasks)
            base = {"network": net["name"], "tasks": tasks}
            records.append(reads(servers, True, {**base, "path": CACHED}, args, say))
            if net["name"] == "loopback" and not floor_records:
                floor_records = floors(services, records[-1], args, say)
            records.append(reads(servers, False, {**base, "path": UNCACHED}, args, say))
            if not args.no_loops:
                for cache, path in ((True, WRITE_ON), (False, WRITE_OFF)):
                    records.append(writes(services, servers, cache, {**base, "path": path},
                                          args, say))
        memory = [{"network": net["name"], "app": app, "cache": "on" if cache else "off",
                   "workers": worker_rss(server)} for (app, cache), server in servers.items()]
    return records, memory, floor_records


# --- goals -------------------------------------------------------------------------------


def find(records: Sequence[Record], network: str, path: str, tasks: int) -> Record | None:
    return next((r for r in records if (r["network"], r["path"], r["tasks"])
                 == (network, path, tasks)), None)


def goals(doc: Record) -> list[Goal]:
    records, sizes = doc["records"], doc["sizes"]
    found = []
    for path in PATHS:
        found.append(ratio_goal(records, sizes, "loopback", path, LOOPBACK_GOAL))
    found.append(stale_goal(records))
    for path in PATHS:
        found.append(own_loopback_goal(records, sizes, path))
    for path in PATHS:
        found.append(ratio_goal(records, sizes, "delayed", path, DELAYED_GOAL))
    found += round_trip_goals(doc["round_trips"])
    found.append(memory_goal(doc["memory"], doc["recent_bytes"]))
    return found


def ratio_goal(records: Sequence[Record], sizes: Sequence[int], network: str, path: str,
               least: float) -> Goal:
    text = f"{network}, {path}, this app / tutorial >= {least:g}x at every size"
    found = [(n, r) for n in sizes if (r := find(records, network, path, n)) is not None]
    if not found:
        return Goal(text, None, "not in this run")
    detail = ", ".join(f"{n} tasks {r['ratio']:.2f}x" for n, r in found)
    return Goal(text, all(r["ratio"] >= least for _, r in found), detail)


def own_loopback_goal(records: Sequence[Record], sizes: Sequence[int], path: str) -> Goal:
    text = f"delayed, {path}, this app >= {OWN_LOOPBACK_GOAL:g} of its own loopback rate"
    shares = []
    for n in sizes:
        near, far = find(records, "loopback", path, n), find(records, "delayed", path, n)
        if near is not None and far is not None:
            shares.append((n, far["ours"]["rate"] / near["ours"]["rate"]))
    if not shares:
        return Goal(text, None, "not in this run")
    return Goal(text, all(s >= OWN_LOOPBACK_GOAL for _, s in shares),
                ", ".join(f"{n} tasks {s:.2f}" for n, s in shares))


def stale_goal(records: Sequence[Record]) -> Goal:
    loops = [r for r in records if r["path"] in (WRITE_ON, WRITE_OFF)]
    if not loops:
        return Goal("zero stale reads for this app", None, "no write-then-read loop run")
    ours = sum(r["ours"]["stale"] for r in loops)
    pairs = sum(r["ours"]["pairs"] for r in loops)
    theirs = sum(r["peer"]["stale"] for r in loops)
    return Goal("zero stale reads for this app", ours == 0,
                f"{ours} stale of {pairs:,} reads (the tutorial: {theirs})")


def round_trip_goals(trips: Record | None) -> list[Goal]:
    hit = "a cached hit: 1 memcached and 0 database round trips before the answer"
    after = "`GET /` after a write: at most 1 database and 2 memcached round trips before " \
            "the answer"
    if not trips:
        return [Goal(hit, None, "not in this run"), Goal(after, None, "not in this run")]
    ours = [r for r in trips["paths"] if r["app"] == OURS]

    def check(text: str, path: str, db: float, mc: float, exact: bool) -> Goal:
        rows = [r for r in ours if r["path"] == path]
        if not rows:
            return Goal(text, None, "not in this run")
        ok = all((r["db_before"], r["mc_before"]) == (db, mc) if exact
                 else r["db_before"] <= db and r["mc_before"] <= mc for r in rows)
        return Goal(text, ok, ", ".join(f"{r['tasks']} tasks: {r['db_before']:g} database, "
                                        f"{r['mc_before']:g} memcached" for r in rows))

    return [check(hit, round_trips.CACHED, 0, 1, exact=True),
            check(after, round_trips.AFTER_WRITE, 1, 2, exact=False)]


def memory_goal(memory: Sequence[Record], recent_bytes: int) -> Goal:
    text = "a worker's RSS at most the tutorial worker's plus CACHE_RECENT_BYTES"
    checked = []
    for mine in (m for m in memory if m["app"] == OURS and m["workers"]):
        theirs = next((m for m in memory if m["app"] == PEER and m["workers"]
                       and (m["network"], m["cache"]) == (mine["network"], mine["cache"])), None)
        if theirs is not None:
            largest = max(w["rss_kib"] for w in mine["workers"])
            bound = max(w["rss_kib"] for w in theirs["workers"]) + recent_bytes // 1024
            checked.append((mine, largest, bound))
    if not checked:
        return Goal(text, None, "not in this run")
    detail = ", ".join(f"{m['network']} cache {m['cache']}: {mib(largest)} against "
                       f"{mib(bound)}" for m, largest, bound in checked)
    return Goal(text, all(largest <= bound for _, largest, bound in checked), detail)


def mib(kib: float) -> str:
    return f"{kib / 1024:,.1f} MiB"


# --- report ------------------------------------------------------------------------------


def rate_cell(figures: Record) -> str:
    notes = []
    if figures.get("warm_up"):
        notes.append(figures["warm_up"])
    if figures.get("non_2xx"):
        notes.append(f"{figures['non_2xx']:,} non-2xx")
    if figures.get("socket_errors"):
        notes.append(f"{figures['socket_errors']:,} socket errors")
    if figures.get("errors"):
        notes.append(f"{figures['errors']:,} errors")
    return f"{figures['rate']:,.1f}" + (f" ({', '.join(notes)})" if notes else "")


def rates_table(records: Sequence[Record], network: str) -> list[str]:
    rows = [r for r in records if r["network"] == network]
    if not rows:
        return []
    lines = ["| path | tasks (at the start of a loop) | tutorial | this app "
             "| this app / tutorial | each round |",
             "|---|---:|---:|---:|---:|---|"]
    for path in PATHS:
        for r in (r for r in rows if r["path"] == path):
            unit = "pairs/s" if path in (WRITE_ON, WRITE_OFF) else "req/s"
            rounds = ", ".join(f"{x:.2f}x" for x in r["round_ratios"])
            lines.append(f"| {path} ({unit}) | {r['tasks']:,} | {rate_cell(r['peer'])} | "
                         f"{rate_cell(r['ours'])} | **{r['ratio']:.2f}x** | {rounds} |")
    return [*lines, ""]


def loops_table(records: Sequence[Record]) -> list[str]:
    rows = [r for r in records if r["path"] in (WRITE_ON, WRITE_OFF)]
    if not rows:
        return []
    lines = [f"Write then read ({CLIENTS} clients; client CPU: the loop's share of one CPU, "
             "the most of its rounds):", "",
             "| network | path | tasks | app | pairs | p50 pair | p99 pair | stale | errors "
             "| client CPU |", "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        for app, figures in ((PEER, r["peer"]), (OURS, r["ours"])):
            lines.append(f"| {r['network']} | {r['path']} | {r['tasks']:,} | {app} | "
                         f"{figures['pairs']:,} | {figures['pair_p50_ms']:,.1f} ms | "
                         f"{figures['pair_p99_ms']:,.1f} ms | {figures['stale']} | "
                         f"{figures['errors']} | {figures['client_cpu']:.0%} |")
    examples = [f"- {r['network']} {r['path']} {r['tasks']} tasks, {app}: {e}"
                for r in rows for app, key in ((PEER, "peer"), (OURS, "ours"))
                for e in r[key]["examples"]]
    return [*lines, *examples[:10], ""]


def cpu_table(records: Sequence[Record], floor_records: Sequence[Record]) -> list[str]:
    """CPU time per request of each app's workers (user and system, from /proc, over each
    wrk run), and the server floors beside the tutorial's cached GET /."""
    rows = [r for r in records if r["path"] in (CACHED, UNCACHED)]
    if not rows:
        return []
    lines = ["CPU time of the workers per request (medians over rounds; what a request costs "
             "the machine's two cores, the kernel's share included):", "",
             "| network | path | tasks | tutorial | this app |", "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['network']} | {r['path']} | {r['tasks']:,} | "
                     f"{r['peer']['cpu_us']:,.0f} us | {r['ours']['cpu_us']:,.0f} us |")
    if floor_records:
        lines += ["", "Server floors (diagnostic): the bench/baselines.py apps served as this "
                  "app is (`hypercorn --config hypercorn.toml`), measured just after the "
                  f"cached `GET /` at {floor_records[0]['tasks']} tasks above:", "",
                  "| app | req/s | CPU per request | / tutorial's cached GET / "
                  "| / this app's cached GET / |", "|---|---:|---:|---:|---:|"]
        for f in floor_records:
            lines.append(f"| `{f['app']}` | {f['rate']:,.0f} | {f['cpu_us']:,.0f} us | "
                         f"{f['to_peer']:.2f}x | {f['to_ours']:.2f}x |")
    return [*lines, ""]


def memory_table(memory: Sequence[Record], recent_bytes: int) -> list[str]:
    if not memory:
        return []
    lines = [f"Resident size (VmRSS) of each worker after the runs; this app's "
             f"CACHE_RECENT_BYTES is {mib(recent_bytes // 1024)}:", "",
             "| network | cache | tutorial workers | this app's workers |", "|---|---|---|---|"]
    for net in dict.fromkeys(m["network"] for m in memory):
        for cache in ("on", "off"):
            cells = []
            for app in (PEER, OURS):
                m = next((m for m in memory if (m["network"], m["app"], m["cache"])
                          == (net, app, cache)), None)
                cells.append(", ".join(mib(w["rss_kib"]) for w in m["workers"])
                             if m and m["workers"] else "–")
            lines.append(f"| {net} | {cache} | {cells[0]} | {cells[1]} |")
    return [*lines, ""]


def header(doc: Record) -> list[str]:
    m, v = doc["machine"], doc["versions"]
    ours = ", ".join(f"{k} {x}" for k, x in v["ours"].items())
    theirs = ", ".join(f"{k} {x}" for k, x in v["peer"].items() if k != "python")
    return [f"Written by `{SCRIPT}` on {doc['date']}. Command:", "", "```", doc["command"],
            "```", "", *([] if doc["round_trips_only"] else short_run(doc)),
            *([f"This app: {doc['app']}.", ""] if doc["round_trips_only"] else method(doc)),
            f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} RAM, {m['os']}. "
            f"This app: Python {v['python']}, {ours}. The tutorial: "
            + (f"Python {v['peer'].get('python', '-')}, {theirs}." if theirs else "not run."),
            ""]


def method(doc: Record) -> list[str]:
    """How the side-by-side measures, in a paragraph."""
    return [f"This app: {doc['app']}, served by `hypercorn --config hypercorn.toml` (its "
            f"{doc['workers']} workers, `APP_ENV=production`; uncached: `CACHE_ENABLED=0`). "
            "The tutorial (../shared/peers/tutorial, run from there): gunicorn, 2 sync "
            "workers, `cache` mode, or `nocache` (Flask-Caching's null cache) for the "
            "uncached figures. One PostgreSQL (a database each, seeded with the same tasks, "
            "memcached flushed) and one memcached. Reads: `wrk "
            f"-t{THREADS} -c{CONNECTIONS} -d{doc['seconds']}s GET /` after a warm-up (this "
            "app until `X-Cache: hit`, the tutorial a few GETs); write then read: "
            f"{CLIENTS} clients for {doc['write_seconds']} s, each writes a task (this app "
            "`POST /api/tasks`, the tutorial `POST /`) and at once reads `GET /` from the same "
            "app, a page without the new task counted stale, each round from a re-seeded "
            f"table. {doc['rounds']} rounds, the apps alternating (this app first in odd "
            "rounds); rates are medians over rounds, the ratio is of the medians, and each "
            "round's own ratio is listed.", ""]


def short_run(doc: Record) -> list[str]:
    changed = [f"--{key.replace('_', '-')} "
               + (",".join(map(str, doc[key])) if isinstance(doc[key], list) else str(doc[key]))
               for key, default in DEFAULTS.items() if doc[key] != default]
    if not changed:
        return []
    return [f"**A short run** (`{' '.join(changed)}`), not the default run.", ""]


def networks_text(doc: Record) -> list[str]:
    lines = []
    for net in doc["networks"]:
        if net["name"] == "loopback":
            lines += ["#### Loopback", "", "Both apps reach PostgreSQL and memcached directly.",
                      ""]
        else:
            rtt = net["round_trip_ms"]
            lines += ["#### Over a network (PostgreSQL and memcached behind a delay proxy)", "",
                      f"`bench/delay_proxy.py` at {net['delay_ms']:g} ms each way in front of "
                      "both servers, for both apps; measured round trip through it: "
                      f"{rtt['memcached']:.2f} ms (memcached `version`), {rtt['postgres']:.2f} "
                      f"ms (PostgreSQL `SELECT 1`), medians of {RTT_SAMPLES}. The proxy used "
                      f"{net.get('proxy_cpu', math.nan):.0%} of a CPU over the runs.", ""]
        lines += rates_table(doc["records"], net["name"])
    return lines


def render(doc: Record) -> str:
    if doc["round_trips_only"]:
        return "\n".join([*header(doc), *round_trips.table(doc["round_trips"])])
    lines = [*header(doc), *networks_text(doc), *loops_table(doc["records"]),
             *cpu_table(doc["records"], doc.get("floors", [])),
             *round_trips.table(doc["round_trips"]),
             *memory_table(doc["memory"], doc["recent_bytes"]),
             "Goals (issue 20; computed from the figures above):", "",
             *[goal.line() for goal in goals(doc)]]
    return "\n".join(lines)


def chart(doc: Record, path: Path) -> None:
    """This app / tutorial per path against tasks, loopback and delayed, with the goals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    nets = [n["name"] for n in doc["networks"]]
    figure, panels = plt.subplots(1, len(nets), figsize=(6.5 * len(nets), 5.5), squeeze=False)
    for axes, net in zip(panels[0], nets, strict=True):
        for case in PATHS:
            points = sorted((r["tasks"], r["ratio"]) for r in doc["records"]
                            if r["network"] == net and r["path"] == case)
            if points:
                xs, ys = zip(*points, strict=True)
                axes.plot(xs, ys, marker="o", label=case)
        axes.axhline(1.0, color="grey", linewidth=1, label="as fast as the tutorial")
        axes.axhline(LOOPBACK_GOAL, color="tab:green", linestyle="--",
                     label=f"{LOOPBACK_GOAL:g}x (loopback goal)")
        axes.axhline(DELAYED_GOAL, color="tab:red", linestyle=":",
                     label=f"{DELAYED_GOAL:g}x (network goal)")
        axes.set_xscale("log")
        axes.set_yscale("log")
        times = FuncFormatter(lambda value, _: f"{value:g}x")
        axes.yaxis.set_major_formatter(times)
        axes.yaxis.set_minor_locator(LogLocator(subs=(1.5, 2, 3, 5)))
        axes.yaxis.set_minor_formatter(times)
        axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,g}"))
        axes.set_xlabel("tasks in the table")
        axes.set_ylabel("this app / tutorial (medians over rounds)")
        axes.set_title(net)
        axes.grid(True, which="both", alpha=0.3)
    handles, labels = panels[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    figure.suptitle("This app beside the MemCachier tutorial app (same run, same servers)")
    figure.tight_layout(rect=(0, 0.1, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


# --- main --------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None, command: str | None = None
               ) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10,100,1000", help="task counts")
    parser.add_argument("--seconds", type=int, default=DEFAULTS["seconds"],
                        help="length of each wrk run")
    parser.add_argument("--write-seconds", type=int, default=None,
                        help="length of each write-then-read loop (default: --seconds)")
    parser.add_argument("--rounds", type=int, default=DEFAULTS["rounds"],
                        help="rounds of each measurement, the apps alternating")
    parser.add_argument("--network", default="loopback,delayed",
                        help="loopback and/or delayed (through bench/delay_proxy.py)")
    parser.add_argument("--delay-ms", type=float, default=DEFAULTS["delay_ms"],
                        help="the delayed network's delay each way")
    parser.add_argument("--peer", type=Path, default=peer.DEFAULT_DIR,
                        help="the tutorial's folder (its setup.sh and serve.sh)")
    parser.add_argument("--peer-venv", type=Path, default=peer.DEFAULT_VENV,
                        help="its virtualenv (setup.sh makes it if missing)")
    parser.add_argument("--no-peer", action="store_true",
                        help="this app alone (only with --round-trips-only)")
    parser.add_argument("--app-root", type=Path, default=ROOT,
                        help="the checkout of this app to measure (its .venv if it has one)")
    parser.add_argument("--round-trips-only", action="store_true",
                        help="only the round-trip table, printed (written only to --out)")
    parser.add_argument("--requests", type=int, default=round_trips.REQUESTS,
                        help="requests per path in the round-trip table")
    parser.add_argument("--no-round-trips", action="store_true",
                        help="leave out the round-trip table")
    parser.add_argument("--no-loops", action="store_true",
                        help="leave out the write-then-read loops")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"where side_by_side.json and .png go (default "
                        f"{OUT.relative_to(ROOT)})")
    parser.add_argument("--no-write", action="store_true", help="leave PERFORMANCE.md alone")
    args = parser.parse_args(argv)
    args.command = command or " ".join([".venv/bin/python", SCRIPT, *sys.argv[1:]])
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.network = [n.strip() for n in args.network.split(",") if n.strip()]
    args.write_seconds = args.write_seconds or args.seconds
    args.app_root = args.app_root.resolve()
    if args.no_peer and not args.round_trips_only:
        parser.error("--no-peer: the side-by-side needs the peer (or use --round-trips-only)")
    if not args.no_peer and not (args.peer / "serve.sh").exists():
        parser.error(f"no tutorial at {args.peer} (--peer DIR, or --no-peer with "
                     "--round-trips-only)")
    if args.round_trips_only and args.no_round_trips:
        parser.error("--round-trips-only and --no-round-trips leave nothing to measure")
    if args.round_trips_only:
        args.no_write = True  # a partial run never replaces the doc's figures
    if args.out is None and not args.round_trips_only:
        args.out = OUT
    return args


def measure(args: argparse.Namespace) -> Record:
    """The whole run: its document (what was measured, on what)."""
    checkout = Checkout(args.app_root)
    say = Progress()
    with apps.started(checkout, None if args.no_peer else args.peer, args.peer_venv) as services:
        doc: Record = {
            "command": args.command, "date": time.strftime("%Y-%m-%d %H:%M %Z"),
            "app": checkout.describe(), "sizes": args.sizes, "seconds": args.seconds,
            "write_seconds": args.write_seconds, "rounds": args.rounds,
            "network": args.network, "delay_ms": args.delay_ms,
            "round_trips_only": args.round_trips_only, "workers": configured_workers(checkout),
            "machine": describe_machine(), "versions": versions(checkout, services),
            "recent_bytes": checkout.recent_bytes(), "networks": [], "records": [],
            "memory": [], "floors": [],
        }
        doc["round_trips"] = None
        if not args.no_round_trips:
            say(f"round trips, {args.requests} requests a path, at {args.sizes} tasks")
            doc["round_trips"] = round_trips.measure(services, args.sizes, args.requests)
            if not args.round_trips_only:
                print("\n".join(round_trips.table(doc["round_trips"])), flush=True)
        for name in [] if args.round_trips_only else args.network:
            with network(services, name, args.delay_ms) as net:
                if "round_trip_ms" in net:
                    say(f"{name}: measured round trip {net['round_trip_ms']}")
                records, memory, floor_records = on_network(services, net, args, say)
            doc["networks"].append(net)
            doc["records"] += records
            doc["memory"] += memory
            doc["floors"] += floor_records
    return doc


def configured_workers(checkout: Checkout) -> int:
    """The workers the checkout's hypercorn.toml asks for."""
    with (checkout.root / "hypercorn.toml").open("rb") as config:
        return int(tomllib.load(config).get("workers", 1))


def versions(checkout: Checkout, services: Services) -> Record:
    packages = ("hypercorn", "quart", "jinja2", "sqlalchemy", "asyncpg", "aiomcache", "uvloop")
    code = ("import json, platform; from importlib.metadata import version; "
            f"print(json.dumps({{'python': platform.python_version(), "
            f"'ours': {{p: version(p) for p in {packages!r}}}}}))")
    found: Record = json.loads(checkout.python(code))
    found["peer"] = services.peer.versions() if services.peer is not None else {}
    return found


def save(args: argparse.Namespace, doc: Record) -> str:
    text = render(doc)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        document = {**doc, "goals": [] if doc["round_trips_only"]
                    else [asdict(g) for g in goals(doc)]}
        (args.out / "side_by_side.json").write_text(json.dumps(document, indent=1) + "\n")
        if doc["records"]:
            chart(doc, args.out / "side_by_side.png")
    if not args.no_write:
        write_results(SCRIPT, HEADING, text, before=BEFORE)
    return text


def main(argv: Sequence[str] | None = None, command: str | None = None) -> str:
    args = parse_args(argv, command)
    doc = measure(args)
    text = save(args, doc)
    print(text, flush=True)
    written = [str(args.out / name) for name in ("side_by_side.json", "side_by_side.png")
               if args.out is not None and (args.out / name).exists()]
    if not args.no_write:
        written.append(str(DOC.relative_to(ROOT)))
    if written:
        print(f"\nWrote {', '.join(written)}.", flush=True)
    return text


if __name__ == "__main__":
    main()

"""Benchmark: `CacheClient` over memcached against raw aiomcache on the same server.

    .venv/bin/python bench/cache_client.py [--server HOST:PORT] [--seconds 2] [--rounds 5]
        [--no-instructions] [--no-write] [--network "how --server is reached"]

Starts a private /usr/bin/memcached unless --server is given, measures get/set/get_many
ops/s at concurrency 1 and 32 (best of interleaved rounds), and, where valgrind is
installed, the instructions one get costs each client (callgrind: the same count on every
run, however busy the machine). Prints the results and the goals they meet, and rewrites its
part of docs/PERFORMANCE.md (see bench/report.py). Not a test: rates depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiomcache

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.cache import CacheClient, KeyBuilder  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.state import make_cache_client  # noqa: E402
from bench.delay_proxy import DelayProxy  # noqa: E402
from bench.report import write_results  # noqa: E402

HEADING = "## Cache client"
POOL = 8
GET_OVERHEAD_GOAL = 0.15  # our single get costs at most 15% more than raw aiomcache's
GET_MANY_GOAL = 10.0  # get_many(50) at least 10x the rate of 50 sequential gets
# Operations run under callgrind, twice; the difference per operation is what one costs.
COUNTED_OPS = {"get": (320, 1920), "get_many": (32, 192)}
ROUNDS = 5
PROXY_DELAY_MS = 0.2  # each way: about 0.5 ms measured per round trip, the VM's wake-ups included
VALUE = {"id": 1, "title": "write the benchmark", "done": False, "tags": ["perf", "cache"]}


def start_memcached() -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = ["/usr/bin/memcached", "-U", "0", "-l", "127.0.0.1", "-p", str(port), "-t", "2"]
    if os.geteuid() == 0:
        args += ["-u", "root"]
    proc = subprocess.Popen(args)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.01)
    raise RuntimeError("memcached did not start")



def app_client(server: str, **settings: Any) -> CacheClient:
    """The app's cache client for `server` as its settings make it (`settings` override
    them), with keys under the prefix "bench"."""
    return make_cache_client(
        Settings(memcache_servers=(server,), cache_key_prefix="bench", **settings)
    )

async def rate(
    op: Callable[[int], Awaitable[object]], concurrency: int, seconds: float, warmup: int = 200
) -> float:
    """Operations per second of `op` run back to back by `concurrency` tasks."""
    for i in range(warmup):  # connections, caches
        await op(i)
    done = 0
    stop = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal done
        i = offset
        while time.perf_counter() < stop:
            await op(i)
            i += concurrency
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    return done / (time.perf_counter() - started)


async def run(
    server: str, seconds: float, rounds: int
) -> list[tuple[str, int, float, float]]:
    host, _, port = server.rpartition(":")
    raw = aiomcache.Client(host, int(port), pool_size=POOL)
    keys = KeyBuilder("bench")
    ours = app_client(server, cache_pool_size=POOL)
    names = [keys.key("bench", i) for i in range(1000)]
    raw_names = [name.encode() for name in names]
    for name in names:
        await ours.set(name, VALUE, 600)
    payload = await ours.backend.get(names[0])
    for name in raw_names:
        await raw.set(name, payload, 600)
    assert await ours.get(names[0]) is not None and await raw.get(raw_names[0]) == payload

    batch = [names[i : i + 50] for i in range(0, 1000, 50)]
    raw_batch = [raw_names[i : i + 50] for i in range(0, 1000, 50)]

    async def sequential_gets(i: int) -> None:
        for name in batch[i % 20]:
            await ours.get(name)

    async def raw_sequential_gets(i: int) -> None:
        for name in raw_batch[i % 20]:
            await raw.get(name)

    rows = []
    for concurrency in (1, 32):
        cases = [
            ("get", lambda i: raw.get(raw_names[i % 1000]), lambda i: ours.get(names[i % 1000])),
            ("get, bytes only (MemcachedBackend)", lambda i: raw.get(raw_names[i % 1000]),
             lambda i: ours.backend.get(names[i % 1000])),
            ("set", lambda i: raw.set(raw_names[i % 1000], payload, 600),
             lambda i: ours.set(names[i % 1000], VALUE, 600)),
            ("get_many(50)", lambda i: raw.multi_get(*raw_batch[i % 20]),
             lambda i: ours.get_many(batch[i % 20])),
            ("50 sequential gets", raw_sequential_gets, sequential_gets),
        ]
        best = {name: [0.0, 0.0] for name, _, _ in cases}
        for _ in range(rounds):  # every case once per round, raw then ours: interleaved
            for name, raw_op, our_op in cases:
                best[name][0] = max(best[name][0], await rate(raw_op, concurrency, seconds))
                best[name][1] = max(best[name][1], await rate(our_op, concurrency, seconds))
        rows += [(name, concurrency, *best[name]) for name, _, _ in cases]
    await raw.close()
    await ours.close()
    return rows


def machine(network: str) -> str:
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    version = subprocess.run(["/usr/bin/memcached", "-V"], capture_output=True, text=True)
    return (f"- Machine: {os.cpu_count()} CPUs (`nproc`), {cpu}\n"
            f"- Python {platform.python_version()}, aiomcache {aiomcache.__version__}, "
            f"{version.stdout.strip()}, {network}, pool of {POOL} connections each")


async def over_a_round_trip(server: str, address: str, seconds: float) -> dict[str, float]:
    """get_many(50) against 50 sequential gets of `CacheClient` through a delay proxy at
    `address`: loopback has no network wait, real servers do. Also the round trip it adds."""
    host, _, port = address.rpartition(":")
    raw = aiomcache.Client(host, int(port), pool_size=1)
    trips = []
    for _ in range(31):
        started = time.perf_counter()
        await raw.version()
        trips.append(time.perf_counter() - started)
    await raw.close()
    keys = KeyBuilder("bench")
    names = [keys.key("bench", i) for i in range(1000)]
    batch = [names[i : i + 50] for i in range(0, 1000, 50)]
    direct = app_client(server)
    for name in names:
        await direct.set(name, VALUE, 600)
    await direct.close()
    ours = app_client(address, cache_pool_size=POOL)

    async def sequential_gets(i: int) -> None:
        for name in batch[i % 20]:
            await ours.get(name)

    many = await rate(lambda i: ours.get_many(batch[i % 20]), 1, seconds, warmup=20)
    sequential = await rate(sequential_gets, 1, seconds, warmup=2)
    await ours.close()
    return {"rtt": sorted(trips)[15], "get_many": many, "sequential": sequential}


Counted = dict[tuple[str, str, int], int]  # (operation, client, concurrency) -> instructions


def instructions(server: str) -> Counted:
    """Instructions per operation of each client, counted by callgrind: get at concurrency
    1 and 32, get_many(50) at concurrency 1."""
    counts: Counted = {}
    for operation, concurrency in (("get", 1), ("get", 32), ("get_many", 1)):
        for client in ("raw", "ours"):
            totals = []
            for ops in COUNTED_OPS[operation]:
                out = subprocess.run(
                    ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                     sys.executable, __file__, "--server", server,
                     "--count", operation, client, str(concurrency), str(ops)],
                    capture_output=True, text=True, check=True,
                ).stderr
                totals.append(int(re.search(r"Collected : (\d+)", out).group(1)))
            fewer, more = COUNTED_OPS[operation]
            count = (totals[1] - totals[0]) // (more - fewer)
            counts[operation, client, concurrency] = count
            print(f"{client} {operation} at concurrency {concurrency}: {count:,} instructions",
                  flush=True)
    return counts


async def count_ops(server: str, operation: str, client: str, concurrency: int, ops: int) -> None:
    """What runs under callgrind: store the values, warm up, then `ops` operations."""
    host, _, port = server.rpartition(":")
    keys = KeyBuilder("bench")
    names = [keys.key("bench", i) for i in range(1000)]
    batches = [names[i : i + 50] for i in range(0, 1000, 50)]
    # valgrind runs ~50x slower: deadlines long enough not to fire (they cost the same)
    ours = app_client(server, cache_pool_size=POOL, cache_op_timeout=60, cache_connect_timeout=60)
    for name in names:
        await ours.set(name, VALUE, 3600)
    op: Callable[[int], Awaitable[object]]
    if client == "raw":
        raw = aiomcache.Client(host, int(port), pool_size=POOL)
        raw_names = [name.encode() for name in names]
        raw_batches = [raw_names[i : i + 50] for i in range(0, 1000, 50)]
        if operation == "get":
            op = lambda i: raw.get(raw_names[i % 1000])  # noqa: E731
        else:
            op = lambda i: raw.multi_get(*raw_batches[i % 20])  # noqa: E731
    elif operation == "get":
        op = lambda i: ours.get(names[i % 1000])  # noqa: E731
    else:
        op = lambda i: ours.get_many(batches[i % 20])  # noqa: E731
    for i in range(300):
        assert await op(i)

    async def worker(offset: int) -> None:
        for i in range(offset, ops, concurrency):
            await op(i)

    await asyncio.gather(*(worker(n) for n in range(concurrency)))


def section(
    rows: list[tuple[str, int, float, float]],
    counted: Counted,
    delayed: dict[str, float],
    args: argparse.Namespace,
) -> str:
    by = {(name, c): (raw, ours) for name, c, raw, ours in rows}
    lines = [
        "`CacheClient` (key building, JSON envelope, deadlines, failover, counters) against raw",
        "aiomcache 0.8.2 on the same memcached; ops/s (a get_many counts as one op), best of",
        f"{args.rounds} rounds of {args.seconds:g} s runs; each round runs every case once, raw "
        "then ours, so noise spreads over all cases.",
        "",
        f"Command: `{args.command}` (run on {time.strftime('%Y-%m-%d')}).",
        "",
        machine(args.network),
        "",
        "| operation | concurrency | raw aiomcache ops/s | CacheClient ops/s | overhead |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, c, raw, ours in rows:
        lines.append(f"| {name} | {c} | {raw:,.0f} | {ours:,.0f} | {raw / ours - 1:+.1%} |")
    if counted:
        lines += [
            "",
            "Instructions per operation (valgrind callgrind, user space only: the difference "
            "between a long and a short run, divided by the number of extra operations; "
            "repeatable whatever else the machine does):",
            "",
            "| operation | concurrency | raw aiomcache | CacheClient | overhead |",
            "|---|---:|---:|---:|---:|",
        ]
        for label, operation, c in (("get", "get", 1), ("get", "get", 32),
                                    ("get_many(50)", "get_many", 1)):
            raw, ours = counted[operation, "raw", c], counted[operation, "ours", c]
            lines.append(f"| {label} | {c} | {raw:,} | {ours:,} | {ours / raw - 1:+.1%} |")
    lines += ["", f"Goals (computed from the numbers above by `{Path(__file__).name}`):", ""]
    for c in (1, 32):
        raw, ours = by["get", c]
        overhead = raw / ours - 1
        measures = [f"{overhead:+.1%} in ops/s"]
        met = [overhead < GET_OVERHEAD_GOAL]
        if counted:
            by_count = counted["get", "ours", c] / counted["get", "raw", c] - 1
            measures.append(f"{by_count:+.1%} in instructions")
            met.append(by_count < GET_OVERHEAD_GOAL)
        verdict = "met" if all(met) else "met in instructions only" if met[-1] else "not met"
        lines.append(f"- single get at concurrency {c}, overhead under "
                     f"{GET_OVERHEAD_GOAL:.0%}: {', '.join(measures)}: {verdict}.")
    for c in (1, 32):
        ours_many, ours_seq = by["get_many(50)", c][1], by["50 sequential gets", c][1]
        raw_many, raw_seq = by["get_many(50)", c][0], by["50 sequential gets", c][0]
        speedup = ours_many / ours_seq
        verdict = "met" if speedup >= GET_MANY_GOAL else "not met"
        lines.append(f"- get_many(50) at concurrency {c}, at least {GET_MANY_GOAL:g}x 50 "
                     f"sequential gets: {speedup:.1f}x (raw aiomcache: "
                     f"{raw_many / raw_seq:.1f}x): {verdict}.")
    speedup = delayed["get_many"] / delayed["sequential"]
    verdict = "met" if speedup >= GET_MANY_GOAL else "not met"
    lines.append(f"- get_many(50) over a {delayed['rtt'] * 1000:.2f} ms round trip (through "
                 f"`bench/delay_proxy.py`), at concurrency 1: {delayed['get_many']:,.0f} "
                 f"against {delayed['sequential']:,.1f} ops/s of 50 sequential gets, "
                 f"{speedup:.1f}x: {verdict}.")
    if counted:
        speedup = 50 * counted["get", "ours", 1] / counted["get_many", "ours", 1]
        verdict = "met" if speedup >= GET_MANY_GOAL else "not met"
        lines.append(f"- get_many(50) in instructions: 50 gets cost {speedup:.1f}x one "
                     f"get_many(50): {verdict}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", help="HOST:PORT of a memcached (default: start one)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved runs, best of")
    parser.add_argument("--no-instructions", action="store_true", help="skip callgrind")
    parser.add_argument("--no-write", action="store_true", help="do not update the doc")
    parser.add_argument("--network", default="loopback TCP", help="how --server is reached")
    parser.add_argument("--count", nargs=4, help=argparse.SUPPRESS)  # what callgrind runs
    args = parser.parse_args()
    if args.count:
        operation, client, concurrency, ops = args.count
        asyncio.run(count_ops(args.server, operation, client, int(concurrency), int(ops)))
        return
    args.command = " ".join([".venv/bin/python", "bench/cache_client.py", *sys.argv[1:]])
    proc = None
    server = args.server
    if server is None:
        proc, server = start_memcached()
    try:
        rows = asyncio.run(run(server, args.seconds, args.rounds))
        with DelayProxy({"memcached": server}, PROXY_DELAY_MS) as proxy:
            delayed = asyncio.run(over_a_round_trip(server, proxy.address("memcached"),
                                                    args.seconds))
        counted = {}
        if not args.no_instructions and shutil.which("valgrind"):
            counted = instructions(server)
    finally:
        if proc is not None:
            proc.kill()
    text = section(rows, counted, delayed, args)
    print(text)
    if not args.no_write:
        write_results("bench/cache_client.py", HEADING, text)


if __name__ == "__main__":
    main()

"""Benchmark: `CacheClient` over memcached against raw aiomcache on the same server.

    .venv/bin/python bench/cache_client.py [--server HOST:PORT] [--seconds 2] [--no-write]
        [--network "veth, netem 150 us each way"]

Starts a private /usr/bin/memcached unless --server is given, measures get/set/get_many
ops/s at concurrency 1 and 32, prints a table and rewrites the "Cache client" section of
docs/PERFORMANCE.md. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiomcache

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.cache import CacheClient, KeyBuilder, MemcachedBackend  # noqa: E402

DOC = ROOT / "docs" / "PERFORMANCE.md"
POOL = 8
ROUNDS = 5
ANALYSIS = """\
Reading the numbers: this is a shared 2-CPU VM (other work runs on it) and single runs vary
by up to 2x, hence best-of interleaved rounds; compare ratios within one table, not rates
across tables (a row above its own subset, e.g. full get above bytes-only get, is noise).
What the client does per operation now: the deadline is one watchdog timer per server that
aborts connections past their deadline (a dict insert and delete per operation instead of an
`asyncio.timeout`, ~5 us); retrieval replies are parsed from buffered chunks (one await per
chunk instead of a `readline` plus a `readexactly` per key), straight into a dict under the
caller's key strings (no re-keying pass), with key validation memoised; envelopes decode
with orjson wherever it gives exactly the stdlib's answer, and that is decided when the entry
is written (header `O`: no run of 20+ digits), so reads skip the digit scan (`J`/`Z` entries,
and `J` entries written before `O`, are still scanned); get_many decodes its batch in one
function (`entry.decode_many`) and counts through each key's memoised counters row (counters
reset in place, so the rows stay live). Micro-measurements on this VM: decode of the bench
value ~1.0 us (was ~1.7-1.9 us; orjson.loads alone ~0.5 us, a memoryview slice instead of a
bytes copy made orjson slower, ~0.57 us); decoding 50 found values 46 us in decode_many
against 51 us in the per-key loop; CacheClient.get_many(50) ~155 us against ~220 us before,
MemcachedBackend.get_many(50) ~85 us against ~100 us.
Encoding stays with the stdlib JSON encoder (it rejects NaN and non-JSON types, orjson would
not), plus the write-time digit scan, which is most of set's overhead. At concurrency 32 the
run is CPU-bound (Python and memcached share 2 CPUs).
Goal status, one full run of this version (the table): get_many(50) ran at 15.4x of 50
sequential gets at concurrency 1 and 10.8x at concurrency 32 (met in this run; the
concurrency-1 rows ran while the VM was busy, note the slow single gets, so that 15.4x is
against a depressed baseline; the concurrency-32 ratio is the one to trust, with a margin of
only 8%). Single-get overhead: +21.2% at concurrency 32 (not met) and +31.2% at concurrency 1
in this busy run (met, -0.9% and +10.8%, in the two earlier runs of the previous version; this
change did not touch the single-get path beyond the memoised key validation and counters row).
Realistic network round trip: not measured. The plan was a network namespace with a veth
pair and `tc qdisc add dev ... root netem delay 150us` on each side; this VM's kernel
(6.18, Firecracker, no module tree) has no netem qdisc ("Specified qdisc kind is unknown"),
so the namespace and veth pair were removed again and no RTT table exists. With a 0.3 ms
round trip each sequential get pays the RTT and get_many(50) pays it once, so the ratio can
only move towards 50x there, but that is an expectation, not a measurement.
"""
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


async def rate(op: Callable[[int], Awaitable[object]], concurrency: int, seconds: float) -> float:
    """Operations per second of `op` run back to back by `concurrency` tasks."""
    for i in range(200):  # warm up: connections, caches
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
    ours = CacheClient(MemcachedBackend([server], pool_size=POOL), keys=keys)
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
                if raw_op is not None:
                    best[name][0] = max(best[name][0], await rate(raw_op, concurrency, seconds))
                best[name][1] = max(best[name][1], await rate(our_op, concurrency, seconds))
        for name, raw_op, _ in cases:
            raw_rate, our_rate = best[name]
            rows.append((name, concurrency, raw_rate if raw_op else float("nan"), our_rate))
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


def section(
    rows: list[tuple[str, int, float, float]], seconds: float, rounds: int, network: str
) -> str:
    lines = [
        "## Cache client",
        "",
        "`CacheClient` (key building, JSON envelope, deadlines, failover, counters) against raw",
        "aiomcache 0.8.2 on the same memcached; ops/s (a get_many counts as one op), best of",
        f"{rounds} rounds of {seconds:g} s runs; each round runs every case once, raw then ours,",
        "so noise spreads over all cases (the table is the best run of each).",
        "",
        "Command: `.venv/bin/python bench/cache_client.py --seconds "
        f"{seconds:g} --rounds {rounds}` (starts its own memcached).",
        "",
        machine(network),
        "",
        "| operation | concurrency | raw aiomcache ops/s | CacheClient ops/s | overhead |",
        "|---|---:|---:|---:|---:|",
    ]
    by = {(name, c): (raw, ours) for name, c, raw, ours in rows}
    for name, c, raw, ours in rows:
        overhead = "" if raw != raw else f"{(raw / ours - 1) * 100:+.1f}%"
        raw_text = "" if raw != raw else f"{raw:,.0f}"
        lines.append(f"| {name} | {c} | {raw_text} | {ours:,.0f} | {overhead} |")
    def speedups(side: int) -> str:
        return ", ".join(
            f"{by[('get_many(50)', c)][side] / by[('50 sequential gets', c)][side]:.1f}x at "
            f"concurrency {c}" for c in (1, 32)
        )

    lines += [
        "",
        f"get_many(50) vs 50 sequential gets of the same client: CacheClient {speedups(1)}; "
        f"raw aiomcache (what the protocol allows here) {speedups(0)}.",
        "Goals: overhead under 15% on single gets; get_many(50) at least 10x faster than 50",
        "sequential gets.",
        "",
        *ANALYSIS.splitlines(),
        "",
    ]
    return "\n".join(lines)


def write_section(text: str) -> None:
    doc = DOC.read_text() if DOC.exists() else "# Performance\n"
    pattern = re.compile(r"^## Cache client\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(doc):
        doc = pattern.sub(lambda _: text + "\n", doc)
    else:
        doc = doc.rstrip("\n") + "\n\n" + text
    DOC.write_text(doc.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", help="HOST:PORT of a memcached (default: start one)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="interleaved runs, best of")
    parser.add_argument("--no-write", action="store_true", help="do not update the doc")
    parser.add_argument("--network", default="loopback TCP", help="how --server is reached")
    args = parser.parse_args()
    proc = None
    server = args.server
    if server is None:
        proc, server = start_memcached()
    try:
        rows = asyncio.run(run(server, args.seconds, args.rounds))
    finally:
        if proc is not None:
            proc.kill()
    text = section(rows, args.seconds, args.rounds, args.network)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()

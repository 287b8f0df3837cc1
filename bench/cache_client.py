"""Benchmark: `CacheClient` over memcached against raw aiomcache on the same server.

    .venv/bin/python bench/cache_client.py [--server HOST:PORT] [--seconds 2] [--no-write]

Starts a private /usr/bin/memcached unless --server is given, measures get/set/get_many
ops/s at concurrency 1 and 32, prints a table and rewrites the "Cache client" section of
docs/PERFORMANCE.md. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python bench/cache_client.py` puts bench/ first on sys.path, where bench/http.py would
# shadow the stdlib's http package: drop it before anything imports http.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections.abc import Awaitable, Callable  # noqa: E402

import aiomcache  # noqa: E402

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
chunk instead of a `readline` plus a `readexactly` per key: in a profile at concurrency 1,
MemcachedBackend.get_many(50) took ~95 us against ~170 us for multi_get); envelopes decode
with orjson wherever it gives exactly the stdlib's answer (~0.5 us instead of ~2.5 us);
counters are one list per (namespace, server), each key's (namespace, server) memoised.
Encoding stays with the stdlib JSON encoder
(it rejects NaN and non-JSON types, orjson would not), which is most of set's overhead. At
concurrency 32 the run is CPU-bound (Python and memcached share 2 CPUs). get_many(50) is now
bound by its per-key work in CacheClient (envelope decode and counting, about 2 us a key in a
profile, against ~2 us a key for the whole transport).
Goal status across our two full runs of this version (3 and 5 rounds): CacheClient.get's
overhead was +10.8% and -0.9% at concurrency 1 (met) but +1.2% and +32.7% at concurrency 32
(not reliably met); get_many(50) ran at 16.7x and 5.4x of 50 sequential gets at concurrency 1
and 7.0x and 7.5x at concurrency 32 (not met: per-key decode and counting, not the wire,
now bound it, and faster single gets raised the bar).
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
            ("50 sequential gets", None, sequential_gets),
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


def machine() -> str:
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    version = subprocess.run(["/usr/bin/memcached", "-V"], capture_output=True, text=True)
    return (f"- Machine: {os.cpu_count()} CPUs (`nproc`), {cpu}\n"
            f"- Python {platform.python_version()}, aiomcache {aiomcache.__version__}, "
            f"{version.stdout.strip()}, loopback TCP, pool of {POOL} connections each")


def section(rows: list[tuple[str, int, float, float]], seconds: float, rounds: int) -> str:
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
        machine(),
        "",
        "| operation | concurrency | raw aiomcache ops/s | CacheClient ops/s | overhead |",
        "|---|---:|---:|---:|---:|",
    ]
    by = {(name, c): (raw, ours) for name, c, raw, ours in rows}
    for name, c, raw, ours in rows:
        overhead = "" if raw != raw else f"{(raw / ours - 1) * 100:+.1f}%"
        raw_text = "" if raw != raw else f"{raw:,.0f}"
        lines.append(f"| {name} | {c} | {raw_text} | {ours:,.0f} | {overhead} |")
    speedups = ", ".join(
        f"{by[('get_many(50)', c)][1] / by[('50 sequential gets', c)][1]:.1f}x at concurrency {c}"
        for c in (1, 32)
    )
    lines += [
        "",
        f"get_many of 50 keys vs 50 sequential gets: {speedups}.",
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
    text = section(rows, args.seconds, args.rounds)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()

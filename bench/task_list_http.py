"""Benchmark: the task list over HTTP, against real hypercorn processes.

    .venv/bin/python bench/task_list_http.py [--seconds 8] [--sizes 10,100,1000] [--workers 1,2]
                                   [--rounds 300] [--no-write]

Starts its own services: a fresh PostgreSQL database (migrated by Alembic, dropped at the
end; `TASKLIST_TEST_POSTGRES_URL` as for the tests) and a memcached on a free port. Then,
for each hypercorn worker count, with the cache on and off (`CACHE_ENABLED=0`), for each
task count: seeds the table and runs `wrk -t2 -c32` on `GET /` and `GET /api/tasks`. With
the cache on it also measures the conditional path (`If-None-Match` with the ETag of a
first answer: 304) against the cached 200 of the same page. Last, a write-then-read loop:
`POST /api/tasks` through one server process then, right after the answer, `GET /` and
`GET /api/tasks` through a second one, counting stale reads.

Prints a table and the goals it meets, and rewrites its part of docs/PERFORMANCE.md (see
bench/report.py). Not a test: the numbers depend on the machine.
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
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from importlib.metadata import version  # noqa: E402

import asyncpg  # noqa: E402
import httpx  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.report import write_results  # noqa: E402
from tests.support.databases import (  # noqa: E402
    create_postgres_database,
    drop_postgres_database,
    run_alembic,
)
from tests.support.memcached import MemcachedProcess  # noqa: E402
from tests.support.servers import LiveServer  # noqa: E402

HEADING = "## Task list over HTTP"
WRK = "/usr/bin/wrk"
THREADS, CONNECTIONS = 2, 32
COMPARED_ROUNDS = 3  # alternating runs of a cached 200 and its 304, best of each
PATHS = ("/", "/api/tasks")


@dataclass
class WrkResult:
    rps: float
    latency_avg: str
    latency_p99: str
    requests: int
    non_2xx: int
    errors: str

    def row(self) -> str:
        bad = f", {self.non_2xx} non-2xx/3xx" if self.non_2xx else ""
        errors = f", socket errors {self.errors}" if self.errors else ""
        return f"{self.rps:,.0f} | {self.latency_avg} | {self.latency_p99}{bad}{errors}"


def rps(result: WrkResult) -> float:
    return result.rps


def wrk(url: str, seconds: int, headers: dict[str, str] | None = None) -> WrkResult:
    args = [WRK, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency"]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    latency = re.search(r"Latency\s+(\S+)", out).group(1)
    p99 = re.search(r"\s99%\s+(\S+)", out).group(1)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return WrkResult(rps, latency, p99, requests, int(non_2xx.group(1)) if non_2xx else 0,
                     errors.group(1).strip() if errors else "")


def dsn(database_url: str) -> str:
    return make_url(database_url).set(drivername="postgresql").render_as_string(False)


async def seed(database_url: str, count: int) -> None:
    """Exactly `count` tasks, ids 1..count (straight SQL: the cache is flushed after)."""
    connection = await asyncpg.connect(dsn(database_url))
    try:
        await connection.execute("TRUNCATE task RESTART IDENTITY")
        await connection.executemany(
            "INSERT INTO task (name, done, created_at, updated_at) "
            "VALUES ($1, $2, now(), now())",
            [(f"Task number {i}: buy milk, call Bob", i % 3 == 0) for i in range(1, count + 1)],
        )
    finally:
        await connection.close()


def get(url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    response = httpx.get(url, headers=headers, timeout=30)
    if response.status_code not in (200, 304):
        response.raise_for_status()
    return response


def throughput(args: argparse.Namespace, database_url: str, memcached: MemcachedProcess,
               logs: Path) -> list[dict[str, object]]:
    results: list[dict[str, object]] = []
    for workers in args.workers:
        for cache in ("on", "off"):
            env = {"DATABASE_URL": database_url, "MEMCACHIER_SERVERS": memcached.address,
                   "CACHE_ENABLED": "1" if cache == "on" else "0"}
            server = LiveServer(env, log=logs / f"wrk-{workers}w-cache-{cache}.log",
                                workers=workers).start()
            try:
                for size in args.sizes:
                    asyncio.run(seed(database_url, size))
                    memcached.flush()  # the seed bypassed the app: drop every generation
                    for path in PATHS:
                        url = server.url + path
                        first = get(url)
                        get(url)  # warm: every worker process has had its chance to fill
                        result = wrk(url, args.seconds)
                        record = {"workers": workers, "cache": cache, "tasks": size,
                                  "path": path, "kind": "200", "result": result,
                                  "x_cache": first.headers.get("x-cache")}
                        results.append(record)
                        print(f"{workers}w cache {cache:3} {size:5} {path:11} 200  {result.row()}",
                              flush=True)
                        etag = first.headers.get("etag")
                        if cache == "on" and size == max(args.sizes) and etag:
                            assert get(url, {"If-None-Match": etag}).status_code == 304
                            # the goal compares these two: alternate them, keep the best of each
                            not_modified = wrk(url, args.seconds, {"If-None-Match": etag})
                            for _ in range(COMPARED_ROUNDS - 1):
                                result = max(result, wrk(url, args.seconds), key=rps)
                                not_modified = max(
                                    not_modified, wrk(url, args.seconds, {"If-None-Match": etag}),
                                    key=rps,
                                )
                            record["result"] = result
                            results.append({**record, "kind": "304", "result": not_modified})
                            print(f"{workers}w cache {cache:3} {size:5} {path:11} 304  "
                                  f"{not_modified.row()}", flush=True)
            finally:
                server.stop()
    return results


async def write_then_read(database_url: str, memcached: MemcachedProcess, logs: Path,
                          rounds: int) -> dict[str, object]:
    """POST through server A, then at once GET / and the API page through server B (and the
    other way round every other round); a read that lacks the new task is stale."""
    await seed(database_url, 100)
    memcached.flush()
    env = {"DATABASE_URL": database_url, "MEMCACHIER_SERVERS": memcached.address}
    servers = [LiveServer(env, log=logs / f"write-read-{n}.log").start() for n in "ab"]
    stale: list[str] = []
    hits = 0
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            # a reader keeps the cache hot meanwhile, so that reads race real fills
            stop = asyncio.Event()

            async def hot() -> None:
                nonlocal hits
                i = 0
                while not stop.is_set():
                    i += 1
                    r = await client.get(servers[i % 2].url + ("/", "/api/tasks")[i // 2 % 2])
                    hits += r.headers.get("x-cache") == "hit"

            reader = asyncio.create_task(hot())
            for i in range(rounds):
                writer, other = servers[i % 2], servers[(i + 1) % 2]
                name = f"bench-{i}-{uuid.uuid4().hex[:8]}"
                created = await client.post(f"{writer.url}/api/tasks", json={"name": name})
                task = created.json()
                page = await client.get(f"{other.url}/")
                if f'value="{name}"' not in page.text:
                    stale.append(f"round {i}: GET / via {other.url} lacks task {task['id']} "
                                 f"(X-Cache {page.headers.get('x-cache')})")
                offset = max(0, task["id"] - 50)
                api = await client.get(f"{other.url}/api/tasks",
                                       params={"limit": 100, "offset": offset})
                if task["id"] not in {t["id"] for t in api.json()["items"]} or \
                        api.json()["total"] != task["id"]:
                    stale.append(f"round {i}: API page via {other.url} lacks task {task['id']} "
                                 f"or total {api.json()['total']} != {task['id']} "
                                 f"(X-Cache {api.headers.get('x-cache')})")
            stop.set()
            await reader
    finally:
        for server in servers:
            server.stop()
    return {"rounds": rounds, "stale": stale, "hits": hits,
            "seconds": time.monotonic() - started}


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
        if line.startswith("Model name:"):
            cpu = line.split(":", 1)[1].strip()
    memory = "unknown"
    with open("/proc/meminfo") as meminfo:
        kib = int(meminfo.readline().split()[1])
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    wrk_version = subprocess.run([WRK, "-v"], capture_output=True, text=True).stdout.split()
    memcached_version = subprocess.run(["/usr/bin/memcached", "-V"], capture_output=True,
                                       text=True).stdout.strip()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": memory,
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": ", ".join(f"{p} {version(p)}" for p in
                              ("hypercorn", "quart", "sqlalchemy", "asyncpg", "aiomcache",
                               "httpx")),
        "wrk": " ".join(wrk_version[:2]) if wrk_version else "wrk",
        "memcached": memcached_version,
    }


async def postgres_version(database_url: str) -> str:
    connection = await asyncpg.connect(dsn(database_url))
    try:
        return (await connection.fetchval("SHOW server_version")).split()[0]
    finally:
        await connection.close()


def render(args: argparse.Namespace, info: dict[str, str], results: list[dict[str, object]],
           loop: dict[str, object] | None) -> str:
    def find(**match: object) -> WrkResult | None:
        for r in results:
            if all(r[k] == v for k, v in match.items()):
                return r["result"]  # type: ignore[return-value]
        return None

    lines = [
        "Written by `bench/task_list_http.py`. Command:",
        "",
        "```",
        f"{args.command}",
        "```",
        "",
        f"Each cell: `{WRK} -t{THREADS} -c{CONNECTIONS} -d{args.seconds}s --latency URL` "
        "against `hypercorn 'app:create_app()' --bind 127.0.0.1:PORT [--workers N]` on a fresh "
        "PostgreSQL database and one memcached (`-m 64 -t 1`), `APP_ENV=development`; cache "
        "off is `CACHE_ENABLED=0` (no view, memoize or fragment caching). The table is seeded "
        "with SQL, memcached flushed, then the URL requested twice before wrk runs. wrk, "
        "hypercorn, PostgreSQL and memcached all share the machine. The cached 200 and the 304 "
        f"of the largest table, which a goal compares, are the best of {COMPARED_ROUNDS} "
        "alternating runs each.",
        "",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory']} RAM, {info['os']}. "
        f"Python {info['python']}; {info['packages']}; PostgreSQL {info['postgres']}; "
        f"{info['memcached']}; {info['wrk']}. Run on {time.strftime('%Y-%m-%d')}.",
        "",
        "| workers | cache | tasks | path | requests/s | avg latency | p99 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['workers']} | {r['cache']} | {r['tasks']} | `{r['path']}`"
            f"{' + `If-None-Match` (304)' if r['kind'] == '304' else ''} | "
            f"{r['result'].row()} |"  # type: ignore[attr-defined]
        )
    lines += ["", "Goals:", ""]
    big = max(args.sizes)
    for workers in args.workers:
        on = find(workers=workers, cache="on", tasks=big, path="/", kind="200")
        off = find(workers=workers, cache="off", tasks=big, path="/", kind="200")
        if on and off:
            ratio = on.rps / off.rps
            verdict = "met" if ratio >= 20 else f"missed (needs {20 * off.rps:,.0f} req/s)"
            lines.append(f"- {workers} worker(s): cached `GET /` with {big} tasks is "
                         f"{ratio:.1f}x the uncached throughput (goal >= 20x): {verdict}.")
        for path in PATHS:
            ok = find(workers=workers, cache="on", tasks=big, path=path, kind="200")
            nm = find(workers=workers, cache="on", tasks=big, path=path, kind="304")
            if ok and nm:
                verdict = "met" if nm.rps >= ok.rps else f"missed by {1 - nm.rps / ok.rps:.0%}"
                lines.append(f"- {workers} worker(s): `{path}` 304 path {nm.rps:,.0f} req/s vs "
                             f"cached 200 {ok.rps:,.0f} req/s (goal: at least as fast): "
                             f"{verdict}.")
    if loop is not None:
        stale = loop["stale"]
        lines.append(
            f"- Write-then-read across two processes (1 worker each, a hot reader running): "
            f"{loop['rounds']} rounds in {loop['seconds']:.1f} s, {len(stale)} stale reads "
            f"(goal: zero), {loop['hits']} cache hits seen by the hot reader."
        )
        lines += [f"  - {s}" for s in stale[:10]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--no-write", action="store_true", help="don't touch PERFORMANCE.md")
    args = parser.parse_args()
    args.command = " ".join([".venv/bin/python", "bench/task_list_http.py", *sys.argv[1:]])
    args.sizes = [int(s) for s in args.sizes.split(",")]
    args.workers = [int(w) for w in args.workers.split(",")]
    if not shutil.which(WRK):
        sys.exit(f"{WRK} is missing: apt-get install wrk")

    database_url = create_postgres_database()
    memcached = MemcachedProcess().start()
    logs = Path(tempfile.mkdtemp(prefix="bench-http-"))
    try:
        run_alembic(database_url, ("upgrade", "head"))
        info = {**machine(), "postgres": asyncio.run(postgres_version(database_url))}
        print(json.dumps(info, indent=1), flush=True)
        results = throughput(args, database_url, memcached, logs)
        loop = asyncio.run(write_then_read(database_url, memcached, logs, args.rounds))
        print(f"write-then-read: {len(loop['stale'])} stale of {loop['rounds']} rounds",
              *loop["stale"][:10], sep="\n")
    finally:
        memcached.kill()
        drop_postgres_database(database_url)
    text = render(args, info, results, loop)
    print(text)
    if not args.no_write:
        write_results("bench/task_list_http.py", HEADING, text)
    shutil.rmtree(logs, ignore_errors=True)


if __name__ == "__main__":
    main()

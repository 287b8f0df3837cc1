"""Benchmark: the task list over HTTP, beside the tutorial app, then in units of Q.

    .venv/bin/python bench/http_benchmark.py [--peer DIR [--peer-venv VENV]
        [--network-delay-ms 1.25]] [--sizes 10,100,1000,10000] [--seconds 10]
        [--rounds 2] [--q-seconds N] [--write-sizes 10,100] [--write-seconds 10]
        [--workers N] [--servers hypercorn,uvicorn,granian] [--out DIR] [--no-write] [--smoke]

With `--peer` (the MemCachier tutorial app's folder, ../shared/peers/tutorial), it first runs
bench/side_by_side.py at the sizes of `--sizes` up to 1,000 tasks: its figures are the goals;
without `--peer` that section is not run (and the report says so). What follows are
diagnostics, in units of Q (bench/http_load.py), on servers it starts itself
(bench/http_servers.py): the baselines; for each task count, cached and uncached, `GET /`
(with and without gzip), `GET /api/tasks` (likewise), the htmx fragment, the next page and
the 304 of `GET /`; the app under `--servers`; the write-then-read loop across two
processes; last, on MariaDB (`--mysql-sizes`), `GET /` and the loop. Writes http.json,
http.png and its block of docs/PERFORMANCE.md (bench/http_report.py). `--smoke` is a
one-minute check of the whole pipeline that writes to a temporary directory only.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from bench import side_by_side  # noqa: E402
from bench.harness import CONNECTIONS, THREADS, WRK, Record, running, stop_all  # noqa: E402
from bench.http_load import (  # noqa: E402
    BASELINES,
    DEFAULTS,
    FLOOR_CASE,
    Q_CASE,
    Run,
    baselines,
    mysql_column,
    other_servers,
    server_size,
    sizes_loop,
    write_then_read,
)
from bench.http_report import SCRIPT, save  # noqa: E402
from bench.http_servers import (  # noqa: E402
    Services,
    app_server,
    baseline_server,
    production_config,
    started_services,
    versions,
)
from bench.report import DOC  # noqa: E402
from tests.support.machine import describe_machine  # noqa: E402

OUT = ROOT / "docs" / "performance"
SMOKE_PAIR_EVERY = 16  # --smoke measures a slot only every 16 rounds, to stay under a minute


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
    text = save(records, slots, meta, args.out, write_doc=not args.no_write)
    print(text)
    written = "" if args.no_write else f" and {DOC.relative_to(ROOT)}"
    print(f"\nWrote {args.out / 'http.json'}, {args.out / 'http.png'}{written}.", flush=True)


if __name__ == "__main__":
    main()

"""What grows in a worker under the chaos suite's load, and whether it stops.

    .venv/bin/python bench/rss_probe.py [--seconds 300] [--every 5] [--clients 64]
        [--dump-at 60,300] [--tracemalloc FRAMES] [--env NAME=VALUE ...] [--trim] [--out DIR]

Starts the chaos suite's stack (tests/chaos/stack.py: app.serve with two workers as the
Dockerfile runs it, a private PostgreSQL holding 1,500 tasks, two memcached) serving
bench/rss_app.py (the app plus signal handlers that report on memory), runs the suite's
clients for `--seconds` with no fault, and samples every worker's RSS every `--every` s.
At each `--dump-at` moment every worker writes its live objects by type, glibc's heap
figures and (with `--tracemalloc`) a tracemalloc snapshot; `--trim` then asks each worker
to `malloc_trim(0)` and samples once more (RSS that trimming gives back was free heap, not
objects). Prints the samples, the object types that grew, and the allocation sites that
grew most between each worker's first and last snapshots. tracemalloc slows the workers and
its snapshots cost memory of their own: measure RSS in a run without it.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from anywhere

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from typing import Any  # noqa: E402

import uvloop  # noqa: E402

from tests.chaos.clients import Client, World, sleep_until, watch_readiness  # noqa: E402
from tests.chaos.stack import Stack, production_stack  # noqa: E402

PROBE_APP = "bench.rss_app:create_app()"
SEED_TASKS = 1500


async def drive(stack: Stack, world: World, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The clients' load for `args.seconds`, with the sampler and the dumps beside it."""
    rng = random.Random(args.seed)
    clients = [Client(n, world, random.Random(rng.random())) for n in range(args.clients)]
    began = time.monotonic()
    deadline = began + args.seconds
    try:
        samples, _ = await asyncio.gather(
            sample(stack, began, args),
            asyncio.gather(*(client.run(deadline) for client in clients),
                           watch_readiness(world, deadline)),
        )
    finally:
        for client in clients:
            await client.close()
    if args.trim:
        await asyncio.sleep(2)
        samples.append(record(stack, began, "idle"))
        print_sample(samples[-1])
        for what, signum in (("trimmed", signal.SIGUSR2), ("memos", signal.SIGRTMIN),
                             ("recent", signal.SIGRTMIN + 1)):
            signal_workers(stack, signum)
            await asyncio.sleep(1)
            samples.append(record(stack, began, what))
            print_sample(samples[-1])
    return samples


async def sample(stack: Stack, began: float, args: argparse.Namespace) -> list[dict[str, Any]]:
    dumps = sorted(args.dump_at)
    samples = []
    moment = 0.0
    while moment <= args.seconds:
        await sleep_until(began + moment)
        if dumps and moment >= dumps[0]:
            dumps.pop(0)
            signal_workers(stack, signal.SIGUSR1)
        samples.append(record(stack, began, "load"))
        print_sample(samples[-1])
        moment += args.every
    return samples


def record(stack: Stack, began: float, what: str) -> dict[str, Any]:
    return {"t": round(time.monotonic() - began, 1), "what": what,
            "rss_kib": stack.rss_kib(), "connections": stack.connections()}


def print_sample(sample: dict[str, Any]) -> None:
    workers = ", ".join(f"{pid}: {kib / 1024:.1f} MiB ({sample['connections'].get(pid, 0)} "
                        f"conn)" for pid, kib in sorted(sample["rss_kib"].items()))
    print(f"[rss] {sample['t']:7.1f} s {sample['what']:>7}  {workers}", flush=True)


def signal_workers(stack: Stack, signum: int) -> None:
    for pid in stack.workers():
        os.kill(pid, signum)


def report(out: Path, top: int) -> None:
    """Per worker: object types and allocation sites that grew, first dump to last."""
    by_worker: dict[str, list[Path]] = {}
    for path in sorted(out.glob("*-*.json")):
        by_worker.setdefault(path.stem.split("-")[0], []).append(path)
    for pid, paths in by_worker.items():
        if len(paths) < 2:
            continue
        first, last = (json.loads(path.read_text()) for path in (paths[0], paths[-1]))
        heap = {key: (first["mallinfo2"][key] >> 10, last["mallinfo2"][key] >> 10)
                for key in ("arena", "uordblks", "fordblks", "hblkhd")}
        print(f"\n[rss] worker {pid}, {paths[0].stem} -> {paths[-1].stem}: heap KiB {heap}, "
              f"objects {first['gc_objects']} -> {last['gc_objects']}")
        for path in paths:
            print(f"  {path.stem}: {json.loads(path.read_text())['memos']}")
        grown = {name: count - first["types"].get(name, 0)
                 for name, count in last["types"].items()}
        print("  types grown:", {k: v for k, v in sorted(grown.items(), key=lambda kv: -kv[1])
                                 [:15] if v > 0})
        snapshots = [path.with_suffix(".tm") for path in (paths[0], paths[-1])]
        if all(path.exists() for path in snapshots):
            old, new = (tracemalloc.Snapshot.load(str(path)).filter_traces(IGNORED)
                        for path in snapshots)
            for group in ("lineno", "traceback"):
                print(f"  top {top} by {group}:")
                for stat in new.compare_to(old, group)[:top]:
                    frames = stat.traceback.format(limit=6 if group == "traceback" else 1)
                    print(f"    {stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks"
                          f"  (now {stat.size / 1024:.1f} KiB)")
                    print("      " + "\n      ".join(line.strip() for line in frames
                                                    if line.strip()))


IGNORED = (
    tracemalloc.Filter(False, tracemalloc.__file__),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--dump-at", type=lambda s: [float(x) for x in s.split(",") if x],
                        default=[], help="comma-separated seconds into the load")
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                        help="trace allocations in the workers, FRAMES per traceback")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a variable for the app (e.g. MALLOC_ARENA_MAX=2)")
    parser.add_argument("--trim", action="store_true", help="malloc_trim(0) after the load")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="rss-probe-"))
    out.mkdir(parents=True, exist_ok=True)
    env = dict(item.split("=", 1) for item in args.env)
    env |= {"RSS_PROBE_DIR": str(out), "RSS_PROBE_TRACEMALLOC": str(args.tracemalloc or "")}
    with production_stack(out, SEED_TASKS, app=PROBE_APP, env=env) as (stack, seeded):
        world = World(stack.url, run_id=f"rss-{os.getpid()}")
        for task in seeded:
            world.ledger.seeded(task.id, task.name, task.done)
        samples = uvloop.run(drive(stack, world, args))
        violations = world.recorder.violations.total()
    (out / "samples.json").write_text(json.dumps(samples, indent=1) + "\n")
    report(out, args.top)
    print(f"\n[rss] {len(world.recorder.requests)} requests, {violations} violations; "
          f"samples, dumps and app log in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

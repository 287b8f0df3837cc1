"""The chaos run: what production runs, under load, through one fault after another.

    .venv/bin/python -m tests.chaos.run --full   # 64 clients, 20 s phases, a 1-minute warm-up,
                                                 # a 5-minute soak, the partition phase
                                                 # (~10 min): rewrites docs/RELIABILITY.md
    .venv/bin/python -m tests.chaos.run          # quick mode (~30 s), as `make test` runs it

The app is served by the Dockerfile's CMD with the image's environment (app.serve, two
workers) on a PostgreSQL of its own and two memcached servers; 1,500 tasks are seeded first.
Each phase runs the same load with one fault (see phases.py), then checks the table against
the ledger with no request in flight. A line per phase shows progress; the results go to
`--out` as JSON (and, in full mode, to docs/RELIABILITY.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

from app.settings import PROJECT_ROOT
from bench.report import write_results
from tests.chaos import report
from tests.chaos.clients import Client, Recorder, World, watch_readiness
from tests.chaos.phases import Phase, partition_phase, phases
from tests.chaos.stack import SeededTask, Stack, production_stack, stored_tasks
from tests.support.machine import describe_machine

DOC = PROJECT_ROOT / "docs" / "RELIABILITY.md"
FULL_OUT = PROJECT_ROOT / "docs" / "reliability"
SCRIPT = "tests/chaos/run.py"
HEADING = "## The last full run"


@dataclass(frozen=True)
class Mode:
    name: str
    clients: int
    seed_tasks: int
    phase_seconds: float
    postgres_down: float
    soak_seconds: float | None
    partition_cut: float

    def phases(self) -> list[Phase]:
        return phases(self.phase_seconds, self.postgres_down, self.soak_seconds)

    def partition(self) -> Phase:
        return partition_phase(self.phase_seconds, self.partition_cut)


QUICK = Mode("quick", clients=16, seed_tasks=1500, phase_seconds=3.0, postgres_down=2.0,
             soak_seconds=None, partition_cut=1.5)
FULL = Mode("full", clients=64, seed_tasks=1500, phase_seconds=20.0, postgres_down=5.0,
            soak_seconds=300.0, partition_cut=10.0)


def run(mode: Mode, out: Path, logs: Path, seed: int = 0) -> dict[str, Any]:
    """Start the stack, run every phase, stop it all; then the partition phase on a stack
    of its own (its memcached traffic goes through a proxy: see partition.py); return the
    results (also in `out`)."""
    began = time.monotonic()
    rng = random.Random(seed)
    with production_stack(logs, mode.seed_tasks) as (stack, seeded):
        phase_results = run_on(stack, seeded, mode, mode.phases(), rng)
        environment = {"machine": describe_machine(),
                       "versions": report.versions(stack.postgres.dsn)}
    with production_stack(logs / "partitionable", mode.seed_tasks, partitionable=True) as (
        stack, seeded
    ):
        phase_results += run_on(stack, seeded, mode, [mode.partition()], rng)
    results = {
        "mode": mode.name,
        "command": f".venv/bin/python -m tests.chaos.run{' --full' if mode is FULL else ''}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": report.commit(),
        "elapsed_s": round(time.monotonic() - began, 1),
        "config": {"clients": mode.clients, "seed_tasks": mode.seed_tasks,
                   "phase_seconds": mode.phase_seconds, "postgres_down_s": mode.postgres_down,
                   "soak_seconds": mode.soak_seconds, "partition_cut_s": mode.partition_cut},
        **environment,
        "phases": phase_results,
        "goals": [goal.record() for goal in report.goals(phase_results, mode.clients)],
        "app_log": str(logs / "app.log"),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "chaos.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    return results


def run_on(
    stack: Stack, seeded: list[SeededTask], mode: Mode, phases: list[Phase],
    rng: random.Random,
) -> list[dict[str, Any]]:
    """Run `phases` in turn on `stack`, with one ledger."""
    world = World(stack.url, run_id=f"chaos-{secrets.token_hex(3)}")
    for task in seeded:
        world.ledger.seeded(task.id, task.name, task.done)
    return uvloop.run(run_phases(mode, phases, stack, world, rng))


async def run_phases(
    mode: Mode, phases: list[Phase], stack: Stack, world: World, rng: random.Random
) -> list[dict[str, Any]]:
    clients = [Client(n, world, random.Random(rng.random())) for n in range(mode.clients)]
    try:
        return [await run_phase(phase, stack, world, clients) for phase in phases]
    finally:
        for client in clients:
            await client.close()


async def run_phase(
    phase: Phase, stack: Stack, world: World, clients: list[Client]
) -> dict[str, Any]:
    world.recorder = recorder = Recorder()
    reads_before = Counter(world.ledger.reads)
    cpu_before = time.process_time()
    began = time.monotonic()
    deadline = began + phase.seconds
    fault = (asyncio.create_task(phase.fault(stack, recorder, phase.seconds))
             if phase.fault else None)
    await asyncio.gather(*(client.run(deadline) for client in clients),
                         watch_readiness(world, deadline))
    events = await fault if fault else {}
    elapsed = time.monotonic() - began
    events["client_cpu_s"] = round(time.process_time() - cpu_before, 1)  # the load's own cost
    ledger = world.ledger.check_table(await stored_tasks(stack.postgres.dsn))
    summary = report.summarize(phase.name, phase.what, elapsed, recorder,
                               world.ledger.reads - reads_before, ledger, events,
                               partitioned=stack.partition is not None)
    print(progress(summary), flush=True)
    return summary


def progress(phase: dict[str, Any]) -> str:
    violations = sum(phase["violations"].values()) + sum(phase["ledger"]["violations"].values())
    return (f"[chaos] {phase['phase']}: {phase['requests']} requests in {phase['seconds']} s, "
            f"5xx {phase['5xx']} ({phase['5xx_outside_db_down']} outside the db-down window), "
            f"no answer {phase['no_answer']}, p50 {phase['p50_ms']} ms, p99 {phase['p99_ms']} "
            f"ms, longest {phase['longest']['ms']} ms, violations {violations}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true",
                        help="64 clients, 20 s phases, a warm-up and a 5-minute soak; rewrites "
                        "the docs")
    parser.add_argument("--out", type=Path, help="where chaos.json goes "
                        "(default: docs/reliability with --full, else a temporary directory)")
    parser.add_argument("--seed", type=int, default=0, help="the clients' random seed")
    args = parser.parse_args(argv)
    mode = FULL if args.full else QUICK
    out = args.out or (FULL_OUT if args.full else Path(tempfile.mkdtemp(prefix="chaos-")))
    logs = Path(tempfile.mkdtemp(prefix="chaos-logs-"))
    results = run(mode, out, logs, args.seed)
    if args.full:
        write_results(SCRIPT, HEADING, report.markdown(results), DOC)
    for goal in results["goals"]:
        print(f"[chaos] goal: {goal['text']}: {goal['detail']}: {goal['met']}")
    print(f"[chaos] results in {out / 'chaos.json'}, app log {logs / 'app.log'}")
    return 0 if all(goal["met"] is not False for goal in results["goals"]) else 1


if __name__ == "__main__":
    sys.exit(main())

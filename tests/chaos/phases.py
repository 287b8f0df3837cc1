"""The phases of a chaos run: the same load each time, with one fault injected into it.

A fault runs beside the clients: it waits a little into the phase (so the load is steady
when it strikes), breaks something for real (a signal to a process, a server stopped),
repairs it, and returns what it observed. The load goes on after the repair, so each phase
also shows the recovery.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg

from tests.chaos.clients import Recorder, sleep_until
from tests.chaos.stack import Stack

Events = dict[str, Any]
Fault = Callable[[Stack, Recorder, float], Coroutine[Any, Any, Events]]

STRIKE = 0.25  # the fault strikes this far into the phase
REPAIR = 0.60  # and is repaired this far into it (PostgreSQL: after its own down time)
REPLACE_TIMEOUT = 15.0  # seconds a SIGKILLed worker has to be replaced
LOG_DRAINS = 10.0  # seconds the invalidation log has to empty at some moment after a partition
# Load before the soak, so that its RSS is measured from warm workers: the survivor of the
# worker kill (serving every client now) fills its bounded per-process caches (32 MiB of
# recent responses, 8,192-key memos) in about 10,000 requests, after which it stays flat
# (docs/RELIABILITY.md, finding 4).
WARM_UP = 60.0


@dataclass(frozen=True)
class Phase:
    name: str
    seconds: float
    what: str  # the fault, in words, for the report
    fault: Fault | None = None


async def kill_one_memcached(stack: Stack, recorder: Recorder, seconds: float) -> Events:
    server = stack.memcached[0]
    await asyncio.sleep(seconds * STRIKE)
    server.kill()
    killed = time.monotonic()
    await asyncio.sleep(seconds * (REPAIR - STRIKE))
    await asyncio.to_thread(server.start)
    return {"memcached_down_s": round(time.monotonic() - killed, 2)}


async def freeze_one_memcached(stack: Stack, recorder: Recorder, seconds: float) -> Events:
    """SIGSTOP: the server keeps its connections open and answers nothing, the case the
    client's operation timeout (750 ms) is for."""
    server = stack.memcached[1]
    await asyncio.sleep(seconds * STRIKE)
    server.send_signal(signal.SIGSTOP)
    frozen = time.monotonic()
    await asyncio.sleep(seconds * (REPAIR - STRIKE))
    server.send_signal(signal.SIGCONT)
    return {"memcached_frozen_s": round(time.monotonic() - frozen, 2)}


async def kill_both_memcached(stack: Stack, recorder: Recorder, seconds: float) -> Events:
    await asyncio.sleep(seconds * STRIKE)
    for server in stack.memcached:
        server.kill()
    killed = time.monotonic()
    await asyncio.sleep(seconds * (REPAIR - STRIKE))
    for server in stack.memcached:
        await asyncio.to_thread(server.start)
    return {"memcached_down_s": round(time.monotonic() - killed, 2)}


def stop_postgres(down: float) -> Fault:
    """PostgreSQL stopped (`pg_ctl stop -m fast`: sessions ended by the administrator) for
    `down` seconds, then started again on the same port and data; the app must answer 503
    meanwhile and recover by itself, with the same processes."""

    async def fault(stack: Stack, recorder: Recorder, seconds: float) -> Events:
        began = time.monotonic()
        processes = (stack.app.pid, stack.workers())
        await asyncio.sleep(seconds * 0.2)
        stopping = time.monotonic()
        await asyncio.to_thread(stack.postgres.stop)
        await asyncio.sleep(down)
        await asyncio.to_thread(stack.postgres.start)
        back = time.monotonic()
        recorder.windows.append((stopping, back))
        await sleep_until(began + seconds * 0.9)  # recovered by now, by itself
        return {
            "postgres_down_s": round(back - stopping, 2),
            "app_processes_unchanged": (stack.app.pid, stack.workers()) == processes,
        }

    return fault


async def kill_a_worker(stack: Stack, recorder: Recorder, seconds: float) -> Events:
    """SIGKILL the worker that holds the most client connections (the one serving them:
    the other may hold none); app.serve's master must start another in its place, and that
    one must come to serve."""
    began = time.monotonic()
    await asyncio.sleep(seconds * STRIKE)
    before = stack.workers()
    connections = stack.connections()
    victim = max(before, key=lambda pid: connections.get(pid, 0))
    events: Events = {"connections_before": connections, "killed_worker": victim,
                      "replaced_after_s": None, "serving_after_s": None}
    log = stack.log_size()
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    while time.monotonic() - killed < REPLACE_TIMEOUT:
        new = [pid for pid in stack.workers() if pid not in before]
        if new and events["replaced_after_s"] is None:
            events["replaced_after_s"] = round(time.monotonic() - killed, 2)
        if new and stack.serving(new[0], log):
            events["serving_after_s"] = round(time.monotonic() - killed, 2)
            break
        await asyncio.sleep(0.05)
    events["workers"] = stack.workers()
    await sleep_until(began + seconds * 0.9)
    events["connections_after"] = stack.connections()
    return events


def partition_a_worker(cut: float, bound: float) -> Fault:
    """One worker cut off from both memcached servers for `cut` seconds, the other not (a
    `WorkerPartition`): the cut one's bumps fail, so the invalidation log's other deliveries
    must keep every read within `bound` seconds of the writes acknowledged before it. The
    cut one is the worker with the fewest client connections but some, so that most reads
    go through the other one, which serves from the cache the cut one cannot invalidate."""

    async def fault(stack: Stack, recorder: Recorder, seconds: float) -> Events:
        partition = stack.partition
        assert partition is not None, "the partition phase needs a partitionable stack"
        recorder.grace = bound
        began = time.monotonic()
        await asyncio.sleep(seconds * STRIKE)
        connections = stack.connections()
        serving = [pid for pid in stack.workers() if connections.get(pid, 0)]
        victim = min(serving or stack.workers(), key=lambda pid: connections.get(pid, 0))
        await asyncio.to_thread(partition.cut, victim)
        cut_at = time.monotonic()
        rows = []
        while time.monotonic() - cut_at < cut:
            rows.append(await outstanding_invalidations(stack.postgres.dsn))
            await asyncio.sleep(0.25)
        await asyncio.to_thread(partition.restore)
        restored = time.monotonic()
        emptied = None  # the log holds the writes in flight, then nothing once they stop
        while time.monotonic() < began + seconds * 0.95 or emptied is None:
            if await outstanding_invalidations(stack.postgres.dsn) == 0:
                emptied = emptied or time.monotonic()
            elif time.monotonic() - restored > LOG_DRAINS:
                break
            await asyncio.sleep(0.05)
        return {
            "connections_before": connections, "partitioned_worker": victim,
            "partitioned_s": round(restored - cut_at, 2),
            "its_memcached_connections_closed": partition.dropped,
            "invalidation_log_rows_max": max(rows, default=0),
            "invalidation_log_empty_s_after_restore": (
                None if emptied is None else round(emptied - restored, 2)),
        }

    return fault


async def outstanding_invalidations(dsn: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        count: int = await connection.fetchval("SELECT count(*) FROM cache_invalidation")
        return count
    finally:
        await connection.close()


def sample_rss(every: float) -> Fault:
    """No fault: the workers' resident memory, sampled through the soak, and the client
    connections each holds at its start and end (a worker that serves nobody does not
    grow)."""

    async def fault(stack: Stack, recorder: Recorder, seconds: float) -> Events:
        began = time.monotonic()
        ages = stack.ages_s()
        connections = stack.connections()
        samples = []
        for moment in [*range(0, int(seconds - 1), int(every)), seconds - 1]:
            await sleep_until(began + moment)
            samples.append((round(time.monotonic() - began), stack.rss_kib()))
        return {"worker_age_at_start_s": ages, "connections_at_start": connections,
                "connections_at_end": stack.connections(), "rss_kib": samples}

    return fault


# The invalidation log's delivery bound (docs/CACHE.md) that reads may lag behind a write
# while a worker is partitioned from memcached.
DELIVERY_BOUND = 1.0


def partition_phase(seconds: float, cut: float) -> Phase:
    """Run on a stack of its own, whose workers reach memcached through a partition."""
    return Phase("one worker partitioned", seconds,
                 f"one worker cut off from both memcached servers for {cut:g} s",
                 partition_a_worker(cut, DELIVERY_BOUND))


def phases(seconds: float, postgres_down: float, soak: float | None) -> list[Phase]:
    """The phases in order; the soak (if any) last, once every fault has been repaired,
    after a warm-up."""
    listed = [
        Phase("steady", seconds, "no fault"),
        Phase("memcached killed", seconds, "one memcached SIGKILLed, then restarted",
              kill_one_memcached),
        Phase("memcached frozen", seconds, "one memcached SIGSTOPped, then SIGCONTed",
              freeze_one_memcached),
        Phase("both memcached down", seconds, "both SIGKILLed, then restarted",
              kill_both_memcached),
        Phase("PostgreSQL down", seconds + postgres_down,
              f"PostgreSQL stopped for {postgres_down:g} s, then started",
              stop_postgres(postgres_down)),
        Phase("worker killed", seconds, "one of the two workers SIGKILLed", kill_a_worker),
    ]
    if soak:
        listed += [
            Phase("warm-up", WARM_UP, "no fault; worker RSS sampled", sample_rss(15.0)),
            Phase("soak", soak, "no fault; worker RSS sampled", sample_rss(30.0)),
        ]
    return listed

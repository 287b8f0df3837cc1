"""Figures of a chaos run: each phase summed up, the goals judged, the machine and versions
named, and the Markdown block for docs/RELIABILITY.md."""

from __future__ import annotations

import asyncio
import math
import platform
import subprocess
from collections import Counter
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

import asyncpg

from app.settings import PROJECT_ROOT
from tests.chaos.clients import Recorder, Request
from tests.chaos.ledger import LedgerReport
from tests.chaos.stack import WORKERS
from tests.support.memcached import MEMCACHED

Record = dict[str, Any]
# The longest a POST / may take in the phases without a fault (before the list was paged, a
# POST / with 1,341 tasks took over 10 s: its answer rendered the whole list).
BOUNDED_POST_S = 5.0
RSS_GROWTH = 0.10
PACKAGES = ("quart", "hypercorn", "sqlalchemy", "asyncpg", "aiomcache", "uvloop", "httpx")


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def overlaps(request: Request, windows: list[tuple[float, float]]) -> bool:
    return any(request.sent < end and request.done > start for start, end in windows)


def flavour(label: str) -> str:
    if label == "GET /readyz":
        return "readyz"
    if "/api/" in label:
        return "api"
    return "htmx" if "(htmx)" in label else "html"


def summarize(
    name: str, what: str, seconds: float, recorder: Recorder, reads: Counter[str],
    ledger: LedgerReport, events: Record, *, partitioned: bool = False,
) -> Record:
    """One phase: its requests, their outcomes and latencies, and what the checks found.
    `partitioned`: it ran on the stack of its own whose memcached traffic is proxied."""
    requests = recorder.requests
    errors = [r for r in requests if (r.status or 0) >= 500]
    down = recorder.windows
    creates = [r for r in requests if r.label.startswith("POST / (")]
    longest = max(requests, key=lambda r: r.seconds)
    longest_post = max(creates, key=lambda r: r.seconds) if creates else None
    after = [r for r in requests if down and r.sent > down[-1][1]]
    return {
        "phase": name,
        "fault": what,
        "seconds": round(seconds, 1),
        "requests": len(requests),
        "per_second": round(len(requests) / seconds),
        "mix": dict(Counter(flavour(r.label) for r in requests)),
        "statuses": dict(sorted(Counter(r.outcome for r in requests).items())),
        "5xx": len(errors),
        "5xx_outside_db_down": sum(not overlaps(r, down) for r in errors),
        "5xx_not_503_in_db_down": sum(overlaps(r, down) and r.status != 503 for r in errors),
        "no_answer": sum(r.status is None for r in requests),
        "no_answer_examples": recorder.dropped.examples,
        "p50_ms": round(percentile([r.seconds for r in requests], 50) * 1000, 1),
        "p99_ms": round(percentile([r.seconds for r in requests], 99) * 1000, 1),
        "longest": {"request": longest.label, "ms": round(longest.seconds * 1000),
                    "outcome": longest.outcome},
        "longest_post": None if longest_post is None else {
            "request": longest_post.label, "ms": round(longest_post.seconds * 1000),
            "outcome": longest_post.outcome},
        "post_p99_ms": round(percentile([r.seconds for r in creates], 99) * 1000, 1),
        "observations_checked": sum(reads.values()),
        "partitioned_stack": partitioned,
        "late_reads": {"allowed_s": recorder.grace, "count": len(recorder.late),
                       "latest_ms": round(max(recorder.late, default=0) * 1000)},
        "violations": dict(recorder.violations.counts),
        "examples": recorder.violations.examples,
        "flashes": dict(recorder.flashes),
        "cross_site": dict(recorder.cross_site),
        "ledger": ledger.summary(),
        "events": {**events, **recovery(after, down)},
    }


def recovery(after: list[Request], down: list[tuple[float, float]]) -> Record:
    """After PostgreSQL is back: how soon a write succeeded, and the 5xx still answered."""
    if not down:
        return {}
    back = down[-1][1]
    writes = [r for r in after if not r.label.startswith("GET") and (r.status or 500) < 500]
    first = min((r.done for r in writes), default=None)
    return {
        "first_write_after_restart_s": None if first is None else round(first - back, 2),
        "5xx_after_restart": sum((r.status or 0) >= 500 for r in after),
    }


# --- goals ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Goal:
    text: str
    met: bool | None  # None: not measured in this mode
    detail: str

    def record(self) -> Record:
        return {"text": self.text, "met": self.met, "detail": self.detail}


def goals(phases: list[Record], clients: int) -> list[Goal]:
    def total(key: str) -> int:
        return sum(p[key] for p in phases)

    def violations(*kinds: str) -> int:
        return sum(p["violations"].get(k, 0) for p in phases for k in kinds)

    final: Counter[str] = Counter()  # the ledger after the last phase on each stack
    for phase in last_on_each_stack(phases):
        final.update(phase["ledger"]["violations"])
    lost = sum(final.values())
    stale = violations("stale read", "unexpected read")
    crossing = violations("another session's flash", "another session's cookie",
                          "flash shown twice", "unexpected flash")
    cross_site = [p["cross_site"] for p in phases]
    sent = sum(c.get("sent", 0) for c in cross_site)
    refused = sum(c.get("refused", 0) for c in cross_site)
    unanswered = sum(c.get("unanswered", 0) for c in cross_site)  # on the killed worker
    other = sum(sum(p["violations"].values()) for p in phases) - stale - crossing
    postgres = next(p for p in phases if p["phase"] == "PostgreSQL down")["events"]
    worker = next(p for p in phases if p["phase"] == "worker killed")["events"]
    dropped = sum(p["no_answer"] for p in phases if p["phase"] != "worker killed")
    killed = next(p for p in phases if p["phase"] == "worker killed")["no_answer"]
    quiet = [p for p in phases if p["phase"] in ("steady", "soak") and p["longest_post"]]
    longest_post = max((p["longest_post"]["ms"] for p in quiet), default=0)
    return [
        Goal("0 5xx outside the PostgreSQL-down window", total("5xx_outside_db_down") == 0,
             f"{total('5xx_outside_db_down')}"),
        Goal("0 5xx other than 503 inside it", total("5xx_not_503_in_db_down") == 0,
             f"{total('5xx_not_503_in_db_down')}"),
        Goal("0 lost or duplicated acknowledged writes", lost == 0,
             f"{lost} (ledger after the last phase: {final or 'clean'})"),
        Goal("0 stale reads", stale == 0,
             f"{stale} in {total('observations_checked'):,} observations of a task checked; "
             + late_text(phases)),
        Goal("no flash or cookie crosses sessions", crossing == 0, f"{crossing}"),
        Goal("every cross-site write refused, nothing changed",
             refused + unanswered == sent and sent > 0,
             f"{refused} of {sent} refused, {unanswered} unanswered (the killed worker's)"),
        Goal("no other unexpected answer", other == 0, f"{other}"),
        Goal("PostgreSQL restarted: recovery without restarting the app",
             postgres["app_processes_unchanged"]
             and postgres["first_write_after_restart_s"] is not None,
             f"same processes: {postgres['app_processes_unchanged']}, first write "
             f"{postgres['first_write_after_restart_s']} s after the restart"),
        Goal("a SIGKILLed worker is replaced", worker["serving_after_s"] is not None
             and len(worker["workers"]) == WORKERS,
             f"a new worker started {worker['replaced_after_s']} s after the kill, serving "
             f"{worker['serving_after_s']} s after it"),
        Goal("requests go unanswered only when their worker is killed (at most one a client)",
             dropped == 0 and killed <= clients,
             f"{killed} in the worker kill, {dropped} in the other phases"),
        Goal(f"POST / stays bounded (under {BOUNDED_POST_S:g} s without a fault)",
             longest_post < BOUNDED_POST_S * 1000, f"longest {longest_post} ms"),
        rss_goal(phases),
    ]


def rss_goal(phases: list[Record]) -> Goal:
    text = f"worker RSS growth under {RSS_GROWTH:.0%} over the soak"
    soak = next((p for p in phases if p["phase"] == "soak"), None)
    if soak is None:
        return Goal(text, None, "no soak in this mode")
    samples = soak["events"]["rss_kib"]
    start, end = samples[0][1], samples[-1][1]
    growth = {pid: end[pid] / start[pid] - 1 for pid in start if pid in end}
    worst = max(growth.values(), default=math.nan)
    detail = ", ".join(f"worker {pid}: {start[pid] / 1024:.0f} -> {end[pid] / 1024:.0f} MiB "
                       f"({growth[pid]:+.1%})" for pid in growth)
    return Goal(text, bool(growth) and worst < RSS_GROWTH, detail or "no worker lasted")


# --- where it ran ---------------------------------------------------------------------------


def versions(dsn: str) -> Record:
    memcached = subprocess.run([MEMCACHED, "-V"], capture_output=True, text=True).stdout
    return {"python": platform.python_version(), **{p: version(p) for p in PACKAGES},
            "memcached": memcached.split()[-1], "postgres": asyncio.run(server_version(dsn))}


async def server_version(dsn: str) -> str:
    connection = await asyncpg.connect(dsn)
    try:
        version: str = await connection.fetchval("SHOW server_version")
        return version.split()[0]
    finally:
        await connection.close()


def commit() -> str:
    """HEAD, and whether the app's files differ from it (the run serves the working tree)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True,
                              text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--", "app", "templates", "hypercorn.toml")
    return f"{head} with uncommitted changes to the app" if changed else head


# --- Markdown -------------------------------------------------------------------------------


def last_on_each_stack(phases: list[Record]) -> list[Record]:
    main = [p for p in phases if not p["partitioned_stack"]]
    partitioned = [p for p in phases if p["partitioned_stack"]]
    return [group[-1] for group in (main, partitioned) if group]


def late_text(phases: list[Record]) -> str:
    """The reads that lagged a write by less than the delivery bound, where allowed."""
    return "; ".join(
        f"with {p['phase']}, {p['late_reads']['count']} lagged a write by less than the "
        f"{p['late_reads']['allowed_s']:g} s delivery bound (at most "
        f"{p['late_reads']['latest_ms']} ms)"
        for p in phases if p["late_reads"]["allowed_s"]
    ) or "no phase allowed any lag"


def markdown(results: Record) -> str:
    """The docs block: how it was run, the phase table, what each fault did, the goals."""
    config, host = results["config"], results["machine"]
    lines = [
        f"Run of {results['date']} at `{results['commit']}`: `{results['command']}` "
        f"({results['mode']} mode, {config['clients']} clients, {config['seed_tasks']:,} "
        f"tasks seeded, {results['elapsed_s'] / 60:.1f} min in all).",
        "",
        f"Machine: {host['nproc']} CPUs ({host['cpu']}), {host['memory']}, {host['os']}; "
        "the app, PostgreSQL, both memcached and the clients all on it. "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items()) + ".",
        "",
        "| phase | requests (/s) | statuses | 5xx | no answer | p50 ms | p99 ms | longest | "
        "longest POST / | observations | stale | ledger |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for phase in results["phases"]:
        lines.append(table_row(phase))
    applied: Counter[str] = Counter()
    for phase in last_on_each_stack(results["phases"]):
        applied.update(phase["ledger"]["unacknowledged_applied"])
    lines += ["", "Writes answered with a 5xx or not at all (uncertain) that were applied all "
              f"the same, by request and answer: {dict(applied) or 'none'}."]
    lines += ["", "The partition phase runs on a stack of its own, the same but for a proxy "
              "in front of each memcached server that can cut one worker off "
              "(tests/chaos/partition.py); it is checked against a ledger of its own."]
    lines += ["", "What each fault did and how the app came through it:", ""]
    for phase in results["phases"]:
        lines.append(f"- **{phase['phase']}** ({phase['fault']}): {events_text(phase)}")
    lines += ["", "Goals:", ""]
    for goal in results["goals"]:
        verdict = {True: "met", False: "**not met**", None: "not measured"}[goal["met"]]
        lines.append(f"- {goal['text']}: {goal['detail']}: {verdict}.")
    return "\n".join(lines)


def table_row(phase: Record) -> str:
    statuses = ", ".join(f"{k}: {v:,}" for k, v in phase["statuses"].items())
    longest = phase["longest"]
    post = phase["longest_post"]
    ledger = phase["ledger"]
    verdict = ", ".join(f"{k} {v}" for k, v in ledger["violations"].items()) or "clean"
    stale = sum(v for k, v in phase["violations"].items() if "read" in k)
    return (
        f"| {phase['phase']} | {phase['requests']:,} ({phase['per_second']}) | {statuses} | "
        f"{phase['5xx']} | {phase['no_answer']} | {phase['p50_ms']} | {phase['p99_ms']} | "
        f"{longest['ms']:,} ms {longest['request']} ({longest['outcome']}) | "
        f"{'-' if post is None else f'{post['ms']:,} ms'} | {phase['observations_checked']:,} | "
        f"{stale} | {verdict}: {ledger['rows']:,} rows, {ledger['uncertain']} uncertain "
        f"({sum(ledger['unacknowledged_applied'].values())} applied) |"
    )


def events_text(phase: Record) -> str:
    parts = [f"{k.replace('_', ' ')}: {v}" for k, v in phase["events"].items() if k != "rss_kib"]
    if samples := phase["events"].get("rss_kib"):
        parts.append("worker RSS " + ", ".join(
            f"{pid}: {samples[0][1][pid] / 1024:.0f} -> {samples[-1][1].get(pid, 0) / 1024:.0f} MiB"
            for pid in samples[0][1]))
    if phase["5xx"]:
        parts.append(f"5xx outside the database-down window {phase['5xx_outside_db_down']}, "
                     f"other than 503 inside it {phase['5xx_not_503_in_db_down']}")
    if phase["violations"]:
        parts.append(f"violations {phase['violations']}")
    parts.append(f"flashes {phase['flashes'] or '{}'}, cross-site {phase['cross_site'] or '{}'}")
    return "; ".join(parts) + "."

"""The cache dashboard's data: counters per kind of cached thing summed over the app's live
processes (`peers`), each process's own row, each server's own view, and the hit ratio of
the last minutes. JSON-able, shared by `/stats` and `/api/stats`."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ..client import CacheClient, ServerRow
from ..keys import KeyKinds
from .history import HitRatioHistory, Point, summed
from .peers import Peer, Peers

KINDS = (KeyKinds.MEMOIZE, KeyKinds.VIEW, KeyKinds.FRAGMENT, KeyKinds.SESSION)
COUNTS = ("hits", "misses", "sets", "deletes")
SERVER_STATS = ("curr_items", "bytes", "evictions", "get_hits", "get_misses")


def published_counts(cache: CacheClient, history: HitRatioHistory) -> dict[str, Any]:
    """What a process publishes for the dashboard (`Peers`' data): its cumulative counts
    per kind, and its hit-ratio points."""
    kinds = cache.counters.snapshot()["kinds"]
    return {
        "kinds": {
            kind: {metric: kinds.get(kind, {}).get(metric, 0) for metric in COUNTS}
            for kind in KINDS
        },
        "history": [vars(point) for point in history.points()],
    }


async def cache_report(
    cache: CacheClient, peers: Peers, history: HitRatioHistory
) -> dict[str, Any]:
    """The dashboard: `kinds`, `total` and `history` are sums over the processes in
    `processes.items`, the processes reporting now (one that exited took its counts with it)."""
    census, stats = await asyncio.gather(peers.census(), cache.stats())
    items = [_process(peer, current=peer.id == peers.id) for peer in census.peers]
    kinds = {
        kind: _kind({metric: sum(item["kinds"][kind][metric] for item in items)
                     for metric in COUNTS})
        for kind in KINDS
    }
    points = summed((_points(peer) for peer in census.peers), history.interval)
    return {
        "backend": stats["backend"],
        "generated_at": time.time(),
        "kinds": kinds,
        "total": _total(kinds),
        "servers": [_server(server) for server in stats["servers"]],
        "history": {
            "interval": history.interval,
            "span": history.span,
            "points": [vars(point) for point in points],
        },
        "processes": {
            "reporting": len(items),
            "complete": census.complete,
            "publish_interval": peers.interval,
            "ttl": peers.ttl,
            "items": items,
        },
    }


async def sample_hit_ratio(cache: CacheClient, history: HitRatioHistory) -> None:
    """Record the kinds' total hits and misses every `history.interval`, on the wall
    clock's multiples of it (as every process does), until cancelled."""
    while True:
        kinds = cache.counters.snapshot()["kinds"]
        counts = [kinds.get(kind, {}) for kind in KINDS]
        history.record(
            sum(c.get("hits", 0) for c in counts), sum(c.get("misses", 0) for c in counts)
        )
        await asyncio.sleep(history.until_next())


def _process(peer: Peer, *, current: bool) -> dict[str, Any]:
    published = peer.data.get("kinds")
    published = published if isinstance(published, dict) else {}
    kinds = {kind: _kind(_counts(published.get(kind))) for kind in KINDS}
    return {
        "id": peer.id,
        "host": peer.host,
        "pid": peer.pid,
        "started_at": peer.started_at,
        "current": current,
        "kinds": kinds,
        "total": _total(kinds),
    }


def _counts(published: Any) -> dict[str, int]:
    """A kind's counts as a process published them (anything else counts as none)."""
    published = published if isinstance(published, dict) else {}
    counts = {metric: published.get(metric, 0) for metric in COUNTS}
    return {metric: n if type(n) is int else 0 for metric, n in counts.items()}


def _points(peer: Peer) -> list[Point]:
    """A process's hit-ratio points (none unless they have this release's shape)."""
    try:
        points = [Point(**point) for point in peer.data.get("history", ())]
    except TypeError:
        return []
    valid = all(
        isinstance(p.at, int | float) and type(p.hits) is int and type(p.lookups) is int
        for p in points
    )
    return points if valid else []


def _total(kinds: dict[str, dict[str, Any]]) -> dict[str, int | float | None]:
    return _kind({metric: sum(kind[metric] for kind in kinds.values()) for metric in COUNTS})


def _kind(counts: dict[str, int]) -> dict[str, int | float | None]:
    row: dict[str, int | float | None] = {metric: counts.get(metric, 0) for metric in COUNTS}
    lookups = counts.get("hits", 0) + counts.get("misses", 0)
    row["hit_ratio"] = counts.get("hits", 0) / lookups if lookups else None
    return row


def _server(server: ServerRow) -> dict[str, Any]:
    raw = server["stats"]
    return {
        "address": server["address"],
        "state": server["state"],
        "up": server["state"] == "up",
        **{name: raw.get(name) for name in SERVER_STATS},
    }

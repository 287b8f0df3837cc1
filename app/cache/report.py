"""The cache dashboard's data: counters per kind of cached thing, each server's own view,
and the hit ratio of the last minutes. JSON-able, shared by `/stats` and `/api/stats`."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .client import CacheClient
from .history import HitRatioHistory

KINDS = ("memoize", "view", "fragment", "session")
COUNTS = ("hits", "misses", "sets", "deletes")
SERVER_STATS = ("curr_items", "bytes", "evictions", "get_hits", "get_misses")


async def cache_report(cache: CacheClient, history: HitRatioHistory) -> dict[str, Any]:
    stats = await cache.stats()
    namespaces = stats["counters"]["namespaces"]
    kinds = {kind: _kind(namespaces.get(kind, {})) for kind in KINDS}
    return {
        "backend": stats["backend"],
        "generated_at": time.time(),
        "kinds": kinds,
        "total": _kind({metric: sum(kind[metric] for kind in kinds.values()) for metric in COUNTS}),
        "servers": [_server(server) for server in stats["servers"]],
        "history": {
            "interval": history.interval,
            "span": history.span,
            "points": [vars(point) for point in history.points()],
        },
    }


async def sample_hit_ratio(cache: CacheClient, history: HitRatioHistory) -> None:
    """Record the kinds' total hits and misses every `history.interval` until cancelled."""
    while True:
        namespaces = cache.counters.snapshot()["namespaces"]
        counts = [namespaces.get(kind, {}) for kind in KINDS]
        history.record(
            sum(c.get("hits", 0) for c in counts), sum(c.get("misses", 0) for c in counts)
        )
        await asyncio.sleep(history.interval)


def _kind(counts: dict[str, int]) -> dict[str, int | float | None]:
    row: dict[str, int | float | None] = {metric: counts.get(metric, 0) for metric in COUNTS}
    lookups = counts.get("hits", 0) + counts.get("misses", 0)
    row["hit_ratio"] = counts.get("hits", 0) / lookups if lookups else None
    return row


def _server(server: dict[str, Any]) -> dict[str, Any]:
    raw = server.get("stats", {})
    return {
        "address": server["address"],
        "state": server["state"],
        "up": server["state"] == "up",
        **{name: raw.get(name) for name in SERVER_STATS},
    }

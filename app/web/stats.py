"""The cache dashboard: what MemCachier's dashboard showed the tutorial's readers, for
this app's own cache. Counters per kind of cached thing, each server's own view, and the
hit ratio of the last minutes, refreshed by htmx polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from quart import Response, current_app, render_template, request
from quart_schema import hide

from app.cache.history import HitRatioHistory, Point, sample_forever
from app.htmx import add_vary, wants_partial
from app.state import get_state
from app.web import bp

KINDS = ("memoize", "view", "fragment", "session")
HISTORY_KEY = "cache_history"
POLL_SECONDS = 2
COUNTS = ("hits", "misses", "sets", "deletes")
SERVER_STATS = ("curr_items", "bytes", "evictions", "get_hits", "get_misses")


@bp.get("/stats")
@hide
async def stats() -> Response:
    report = await cache_report()
    partial = wants_partial(request.headers)
    template = "stats/_panel.html" if partial else "stats/index.html"
    body = await render_template(
        template, report=report, chart=chart(report["history"]), poll_seconds=POLL_SECONDS
    )
    response = add_vary(Response(body))
    response.headers["Cache-Control"] = "no-store"
    return response


async def cache_report() -> dict[str, Any]:
    """The dashboard's data, JSON-able: per kind, per server, and the hit-ratio history."""
    stats = await get_state().cache.stats()
    namespaces = stats["counters"]["namespaces"]
    kinds = {kind: _kind(namespaces.get(kind, {})) for kind in KINDS}
    history = current_app.extensions[HISTORY_KEY]
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


def chart(history: dict[str, Any], width: int = 600, height: int = 120) -> dict[str, Any]:
    """Coordinates for the inline SVG: x is time over the span, y the ratio (top is 100%).
    Intervals without lookups break the line rather than pretending to be 0%."""
    points = [Point(**point) for point in history["points"]]
    end = points[-1].at if points else time.time()
    start = end - history["span"]
    segments: list[list[tuple[float, float]]] = [[]]
    for point in points:
        if point.ratio is None:
            segments.append([])
            continue
        x = (point.at - start) / history["span"] * width
        segments[-1].append((round(x, 1), round((1 - point.ratio) * height, 1)))
    latest = next((p.ratio for p in reversed(points) if p.ratio is not None), None)
    return {
        "width": width,
        "height": height,
        "minutes": round(history["span"] / 60),
        "latest": latest,
        "paths": ["M" + " L".join(f"{x},{y}" for x, y in seg) for seg in segments if len(seg) > 1],
        "dots": [seg[0] for seg in segments if len(seg) == 1],
    }


@bp.while_app_serving
async def sample_hit_ratio() -> AsyncIterator[None]:
    """Sample the kinds' total hits and misses in the background while the app serves."""
    history = current_app.extensions[HISTORY_KEY] = HitRatioHistory()
    cache = get_state().cache

    def totals() -> tuple[int, int]:
        namespaces = cache.counters.snapshot()["namespaces"]
        counts = [namespaces.get(kind, {}) for kind in KINDS]
        return sum(c.get("hits", 0) for c in counts), sum(c.get("misses", 0) for c in counts)

    task = asyncio.create_task(sample_forever(history, totals))
    yield
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass

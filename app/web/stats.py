"""The cache dashboard page: what MemCachier's dashboard showed the tutorial's readers, for
this app's own cache and all its processes (the data: `app.cache.dashboard.report`), refreshed by
htmx polling, with the hit ratio drawn on the server as inline SVG."""

from __future__ import annotations

import time
from typing import Any

from quart import Response, request
from quart_schema import hide

from app.cache.dashboard.report import cache_report
from app.htmx import add_vary, wants_partial
from app.operator_access import operator_only
from app.state import get_state
from app.templating import render
from app.web import bp

POLL_SECONDS = 2


@bp.get("/stats")
@hide
@operator_only
async def stats() -> Response:
    state = get_state()
    report = await cache_report(state.cache_client, state.peers, state.cache_history)
    partial = wants_partial(request.headers)
    template = "stats/_panel.html" if partial else "stats/index.html"
    body = render(
        template, report=report, chart=chart(report["history"]), poll_seconds=POLL_SECONDS
    )
    return add_vary(Response(body))


def chart(history: dict[str, Any], width: int = 600, height: int = 120) -> dict[str, Any]:
    """Coordinates for the inline SVG: x is time over the span, y the ratio (top is 100%).
    Intervals without lookups break the line rather than pretending to be 0%."""
    points = history["points"]
    end = points[-1]["at"] if points else time.time()
    start = end - history["span"]
    segments: list[list[tuple[float, float]]] = [[]]
    for point in points:
        if point["ratio"] is None:
            segments.append([])
            continue
        x = (point["at"] - start) / history["span"] * width
        segments[-1].append((round(x, 1), round((1 - point["ratio"]) * height, 1)))
    latest = next((p["ratio"] for p in reversed(points) if p["ratio"] is not None), None)
    return {
        "width": width,
        "height": height,
        "minutes": round(history["span"] / 60),
        "latest": latest,
        "paths": ["M" + " L".join(f"{x},{y}" for x, y in seg) for seg in segments if len(seg) > 1],
        "dots": [seg[0] for seg in segments if len(seg) == 1],
    }


"""GET /api/stats: the cache dashboard's data as JSON."""

from __future__ import annotations

from typing import Any

from app.api import bp
from app.cache.report import cache_report
from app.state import get_state


@bp.get("/stats")
async def stats() -> tuple[dict[str, Any], int, dict[str, str]]:
    """The cache dashboard's data: counters per kind summed over the app's processes, each
    process's own, each server's state, hit-ratio history."""
    state = get_state()
    report = await cache_report(state.cache, state.peers, state.cache_history)
    return report, 200, {"Cache-Control": "no-store"}

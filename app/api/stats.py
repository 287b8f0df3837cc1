"""GET /api/stats: the cache dashboard's data as JSON."""

from __future__ import annotations

from typing import Any

from app.api import bp
from app.cache.report import cache_report
from app.state import get_state


@bp.get("/stats")
async def stats() -> tuple[dict[str, Any], int, dict[str, str]]:
    """The cache dashboard's data: counters per kind and per server, hit-ratio history."""
    state = get_state()
    return await cache_report(state.cache, state.cache_history), 200, {"Cache-Control": "no-store"}

"""GET /api/stats: the cache dashboard's data as JSON."""

from __future__ import annotations

from typing import Any

from app.api import bp
from app.web.stats import cache_report


@bp.get("/stats")
async def stats() -> tuple[dict[str, Any], int, dict[str, str]]:
    return await cache_report(), 200, {"Cache-Control": "no-store"}

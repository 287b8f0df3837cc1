"""Liveness and readiness probes for the platform's health checks."""

from __future__ import annotations

from quart import Blueprint, Response, current_app

from app import db
from app.cache import CacheClient
from app.state import get_state

bp = Blueprint("health", __name__)


@bp.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers; touches no other service."""
    return {"status": "ok"}


@bp.get("/readyz")
async def readyz() -> Response:
    """Readiness: 503 while the database is unreachable. A cache that is down only makes
    the app slower (every read misses), so it reports `"cache": "degraded"` with a 200."""
    state = get_state()
    cache = "ok" if await cache_reachable(state.cache) else "degraded"
    try:
        await db.ping(state.reader)
    except db.DatabaseUnavailable:
        body = {"status": "unavailable", "database": "down", "cache": cache}
        response = current_app.json.response(body)
        response.status_code = 503
        return response
    return current_app.json.response({"status": "ok", "database": "ok", "cache": cache})


async def cache_reachable(cache: CacheClient) -> bool:
    """True when every cache server answers `stats` and none is marked failed."""
    servers = (await cache.stats())["servers"]
    return cache.healthy() and all(server["stats"] for server in servers)

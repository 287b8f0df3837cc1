"""Liveness and readiness probes for the platform's health checks."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel
from quart import Blueprint, Response, jsonify
from quart_schema import document_response

from app import db
from app.cache import CacheClient
from app.state import get_state

bp = Blueprint("health", __name__)


class Liveness(BaseModel):
    """The process answers."""

    status: Literal["ok"]


class Readiness(BaseModel):
    """Whether the app can serve: its database, and its cache (down only makes it slower)."""

    status: Literal["ok", "unavailable"]
    database: Literal["ok", "down"]
    cache: Literal["ok", "degraded"]


@bp.get("/healthz")
@document_response(Liveness)
async def healthz() -> dict[str, str]:
    """Liveness: the process answers; touches no other service."""
    return {"status": "ok"}


@bp.get("/readyz")
@document_response(Readiness)
@document_response(Readiness, 503)
async def readyz() -> Response:
    """Readiness: 503 while the database is unreachable.

    A cache that is down only makes the app slower (every read misses), so it reports
    `"cache": "degraded"` with a 200."""
    state = get_state()
    cache = "ok" if await cache_reachable(state.cache) else "degraded"
    try:
        await db.ping(state.database.reader)
    except db.DatabaseUnavailable:
        body = {"status": "unavailable", "database": "down", "cache": cache}
        response = jsonify(body)
        response.status_code = 503
        return response
    return jsonify({"status": "ok", "database": "ok", "cache": cache})


async def cache_reachable(cache: CacheClient) -> bool:
    """True when every cache server answers `stats` and none is marked failed."""
    servers = (await cache.stats())["servers"]
    return cache.healthy() and all(server["stats"] for server in servers)

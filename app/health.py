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
    # WRITE_RATE_LIMIT: counted ("ok"), not counted while the cache cannot ("failing open"),
    # or set to 0 ("off").
    write_limit: Literal["ok", "failing open", "off"]


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
    `"cache": "degraded"` with a 200; the write limit, which the cache counts, then lets
    every write through (`"write_limit": "failing open"`)."""
    state = get_state()
    reachable = await cache_reachable(state.cache_client)
    body = {
        "status": "ok",
        "database": "ok",
        "cache": "ok" if reachable else "degraded",
        "write_limit": _write_limit(
            state.write_limit is not None, reachable and state.cache_service.enabled
        ),
    }
    try:
        await db.ping(state.database.reader)
    except db.DatabaseUnavailable:
        response = jsonify({**body, "status": "unavailable", "database": "down"})
        response.status_code = 503
        return response
    return jsonify(body)


def _write_limit(limited: bool, counting: bool) -> str:
    """Whether writes are being counted: not while the cache is down or switched off."""
    if not limited:
        return "off"
    return "ok" if counting else "failing open"


async def cache_reachable(cache: CacheClient) -> bool:
    """True when every cache server answers `stats` and none is marked failed."""
    servers = (await cache.stats())["servers"]
    return cache.healthy() and all(server["stats"] for server in servers)

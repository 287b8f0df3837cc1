"""Liveness and readiness probes for the platform's health checks."""

from __future__ import annotations

from quart import Blueprint, Response, current_app

from app import db
from app.state import get_state

bp = Blueprint("health", __name__)


@bp.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers; touches no other service."""
    return {"status": "ok"}


@bp.get("/readyz")
async def readyz() -> Response:
    """Readiness: 503 while the database is unreachable."""
    try:
        await db.ping(get_state().sessions)
    except db.DatabaseUnavailable:
        response = current_app.json.response({"status": "unavailable", "database": "down"})
        response.status_code = 503
        return response
    return current_app.json.response({"status": "ok", "database": "ok"})

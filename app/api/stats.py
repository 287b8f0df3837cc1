"""GET /api/stats: the cache dashboard's data as JSON."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from quart_schema import document_response

from app.api import bp
from app.api.openapi import headers, problems
from app.cache.dashboard.report import cache_report
from app.operator_access import operator_only
from app.state import get_state


class Counts(BaseModel):
    hits: int
    misses: int
    sets: int
    deletes: int
    hit_ratio: float | None


class Kinds(BaseModel):
    memoize: Counts
    view: Counts
    fragment: Counts
    session: Counts


class Server(BaseModel):
    """A cache server as this process sees it; its `stats` are missing while it is down."""

    address: str
    state: Literal["up", "retrying", "dead"]
    up: bool
    curr_items: int | None
    bytes: int | None
    evictions: int | None
    get_hits: int | None
    get_misses: int | None


class Point(BaseModel):
    at: float
    ratio: float | None
    lookups: int
    hits: int


class History(BaseModel):
    interval: float
    span: float
    points: list[Point]


class Process(BaseModel):
    id: str
    host: str
    pid: int
    started_at: float
    current: bool
    kinds: Kinds
    total: Counts


class Processes(BaseModel):
    reporting: int
    complete: bool
    publish_interval: float
    ttl: int
    items: list[Process]


class CacheReport(BaseModel):
    """The cache dashboard's data (what `/stats` shows)."""

    backend: str
    generated_at: float
    kinds: Kinds
    total: Counts
    servers: list[Server]
    history: History
    processes: Processes


@bp.get("/stats")
@document_response(CacheReport)
@problems(401)
@headers(401, WWW_Authenticate="The schemes the credential is taken in: Basic and Bearer.")
@operator_only
async def stats() -> dict[str, Any]:
    """The cache dashboard's data, for operators (`OPERATOR_TOKEN`).

    Counters per kind summed over the app's processes, each process's own, each server's
    state, the hit-ratio history."""
    state = get_state()
    return await cache_report(state.cache_client, state.peers, state.cache_history)

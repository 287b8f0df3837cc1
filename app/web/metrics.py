"""GET /metrics: the app's figures for Prometheus, for operators (`OPERATOR_TOKEN`)."""

from __future__ import annotations

import asyncio

from quart import Response
from quart_schema import hide

from app.metrics import CONTENT_TYPE, exposition
from app.operator_access import operator_only
from app.state import get_state
from app.web import bp


@bp.get("/metrics")
@hide
@operator_only
async def metrics() -> Response:
    state = get_state()
    census, stats, backlog = await asyncio.gather(
        state.peers.census(), state.cache_client.stats(), state.tasks.invalidation_backlog()
    )
    return Response(exposition(census, stats["servers"], backlog), content_type=CONTENT_TYPE)

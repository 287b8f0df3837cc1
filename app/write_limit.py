"""At most `WRITE_RATE_LIMIT` writes a minute per client, across every process and machine
(`app.cache.rate_limit`). Past it a write is answered 429 with `Retry-After` before its view
runs, so nothing is stored; reads are never limited. The client is the request's address as
`FORWARDED_ALLOW_IPS` decides it (app/proxies.py): a spoofed `X-Forwarded-For` from anyone
else counts against its sender. While the cache cannot count, writes go through and
`/readyz` says the limit is failing open.
"""

from __future__ import annotations

import math

from quart import Quart, Response, request

from app.errors import error_page
from app.state import get_state

WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def refusal(limit: int, seconds: int) -> str:
    return (
        f"Too many changes from your address: at most {limit} a minute. "
        f"Please try again in {seconds} s."
    )


def init_app(app: Quart) -> None:
    """Refuse a client's writes past its limit, before any view runs."""

    @app.before_request
    async def limit_writes() -> Response | None:
        if request.method not in WRITES:
            return None
        write_limit = get_state().write_limit
        if write_limit is None:
            return None
        wait = await write_limit.take(request.remote_addr or "unknown")
        if wait is None:
            return None
        seconds = max(1, math.ceil(wait))
        response = await error_page(429, refusal(write_limit.limit, seconds))
        response.headers["Retry-After"] = str(seconds)
        return response

"""What a request gets while the database is out of reach: a proper 503, never a 500."""

from __future__ import annotations

from collections.abc import Collection

from quart import Response

PROBLEM = "application/problem+json"


async def is_a_proper_503(what: str, response: Response, *, success: Collection[int]) -> bool:
    """True for a 503 of the right kind for `what` ("METHOD /path"), False for a status in
    `success`; fails on anything else. The API answers problem+json, `/readyz` says the
    database is down, pages say so in HTML; every 503 but the probe's has `Retry-After`."""
    status = response.status_code
    if status in success:
        return False
    body = await response.get_data(as_text=True)
    assert status == 503, f"{what} answered {status}: {body[:300]}"
    if what == "GET /readyz":
        assert response.mimetype == "application/json", body[:300]
        assert (await response.get_json())["database"] == "down"
        return True
    assert response.headers["Retry-After"], what
    if what.split()[1].startswith("/api"):
        assert response.mimetype == PROBLEM, what
        assert (await response.get_json())["status"] == 503
    else:
        assert response.mimetype == "text/html", what
        assert "database is unavailable" in body, what
    return True

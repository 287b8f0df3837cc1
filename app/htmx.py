"""Which representation an HTML request gets: the whole page or an htmx fragment.

One URL, two representations (htmx 4): a fragment only for a targeted htmx swap, the full
page for everything else, including htmx's history restore (which re-requests the page).
Every response that branches on this names the headers it read in `Vary`, so that no cache
(ours or a browser's) serves a fragment for a page or the other way round.
"""

from __future__ import annotations

from werkzeug.sansio.response import Response

from app.asgi import HeaderLookup

VARY_HEADERS = ("HX-Request", "HX-Request-Type")


def wants_partial(headers: HeaderLookup) -> bool:
    """True for an htmx request that swaps part of the page and is not a history restore."""
    return (
        headers.get("hx-request") == "true"
        and headers.get("hx-request-type") == "partial"
        and headers.get("hx-history-restore-request") != "true"
    )


def add_vary[R: Response](response: R) -> R:
    """Add `VARY_HEADERS` to the response's `Vary`, keeping what it already names."""
    for name in VARY_HEADERS:
        response.vary.add(name)
    return response

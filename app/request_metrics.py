"""This process's requests counted by route, method and status, with a latency histogram:
recorded by the request log as each request ends (cached answers included), published to
the other processes with the dashboard's data, and summed over all of them by `/metrics`.

A route is the URL rule that matched (`/<int:task_id>/rename`), never the path itself, so
the number of series stays bounded whatever paths clients send; a path no rule matches is
`unmatched`.
"""

from __future__ import annotations

from bisect import bisect_left
from functools import lru_cache

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, MapAdapter

# Upper bounds, in seconds (Prometheus' defaults); each row counts per bucket, not cumulated.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
UNMATCHED = "unmatched"
Row = list[float]  # count, sum of seconds, then one count per bucket and one above the last


class RequestMetrics:
    """Counts and latencies per (route, method, status), for this process's lifetime."""

    def __init__(self, url_map: Map) -> None:
        self._url_map = url_map
        self._rows: dict[tuple[str, str, int], Row] = {}

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        key = (self._route(method, path), method, status)
        row = self._rows.get(key)
        if row is None:
            row = self._rows[key] = [0.0] * (3 + len(BUCKETS))
        row[0] += 1
        row[1] += seconds
        row[2 + bisect_left(BUCKETS, seconds)] += 1

    def published(self) -> list[list[object]]:
        """The rows as JSON: `[route, method, status, count, sum, [per bucket..., above]]`."""
        return [[*key, row[0], row[1], row[2:]] for key, row in self._rows.items()]

    def _route(self, method: str, path: str) -> str:
        return _route_of(self._adapter(), method, path)

    def _adapter(self) -> MapAdapter:
        # Bound on first use: the blueprints' rules are all in the map by then.
        return _bind(self._url_map)


@lru_cache(maxsize=8)
def _bind(url_map: Map) -> MapAdapter:
    return url_map.bind("localhost")


@lru_cache(maxsize=4096)
def _route_of(adapter: MapAdapter, method: str, path: str) -> str:
    try:
        rule, _ = adapter.match(path, method=method, return_rule=True)
    except HTTPException:  # 404, a method the route does not take, a redirect
        return UNMATCHED
    return rule.rule

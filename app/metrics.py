"""`/metrics` in Prometheus' text format, made with the official client library.

The figures are every live process's, summed as `/api/stats` sums them, from what each
process publishes to the dashboard's directory (`Peers`): a scrape through a load balancer
sees the whole app, not the share of the worker that answered. A process that exited takes
its counts with it, which Prometheus reads as a counter reset. The memcached servers' state
and the invalidation log's backlog are read once, at the scrape.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from app.cache.client import ServerRow
from app.cache.dashboard.peers import Census
from app.cache.dashboard.report import COUNTS, KINDS
from app.request_metrics import BUCKETS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RequestKey = tuple[str, str, str]  # route, method, status


def exposition(census: Census, servers: list[ServerRow], backlog: int | None) -> bytes:
    """The text a scrape gets."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([
        *_cache_families(census),
        *_request_families(census),
        *_pool_families(census),
        *_server_families(servers),
        *_backlog_families(backlog),
        GaugeMetricFamily(
            "tasklist_processes", "App processes whose figures are summed here.",
            value=len(census.peers),
        ),
    ]))
    return generate_latest(registry)


class _Families:
    """A collector of families made beforehand (the registry's collect is synchronous)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


def _cache_families(census: Census) -> Iterator[Metric]:
    for metric in COUNTS:
        family = CounterMetricFamily(
            f"tasklist_cache_{metric}", f"Cache {metric} by kind of cached thing.",
            labels=["kind"],
        )
        for kind in KINDS:
            family.add_metric([kind], sum(_count(peer.data, kind, metric) for peer in census.peers))
        yield family


def _count(data: dict[str, Any], kind: str, metric: str) -> int:
    kinds = data.get("kinds")
    counts = kinds.get(kind) if isinstance(kinds, dict) else None
    value = counts.get(metric) if isinstance(counts, dict) else None
    return value if type(value) is int else 0


def _request_families(census: Census) -> Iterator[Metric]:
    counts: dict[RequestKey, float] = defaultdict(float)
    sums: dict[RequestKey, float] = defaultdict(float)
    buckets: dict[RequestKey, list[float]] = {}
    for route, method, status, count, seconds, per_bucket in _request_rows(census):
        key = (route, method, str(status))
        counts[key] += count
        sums[key] += seconds
        summed = buckets.setdefault(key, [0.0] * len(per_bucket))
        for i, n in enumerate(per_bucket):
            summed[i] += n
    requests = CounterMetricFamily(
        "tasklist_http_requests", "HTTP requests answered, by route, method and status.",
        labels=["route", "method", "status"],
    )
    latency = HistogramMetricFamily(
        "tasklist_http_request_duration_seconds",
        "Time from a request's arrival to its answer's last byte, by route, method and status.",
        labels=["route", "method", "status"],
    )
    for key in sorted(counts):
        requests.add_metric(list(key), counts[key])
        cumulative, running = [], 0.0
        for bound, n in zip([*map(str, BUCKETS), "+Inf"], buckets[key], strict=True):
            running += n
            cumulative.append((bound, running))
        latency.add_metric(list(key), cumulative, sums[key])
    yield requests
    yield latency


def _request_rows(census: Census) -> Iterable[tuple[str, str, int, float, float, list[float]]]:
    """Each process's request rows that have this release's shape."""
    for peer in census.peers:
        rows = peer.data.get("requests")
        for row in rows if isinstance(rows, list) else ():
            if not (isinstance(row, list) and len(row) == 6):
                continue
            route, method, status, count, seconds, per_bucket = row
            shaped = (
                isinstance(route, str) and isinstance(method, str) and type(status) is int
                and isinstance(count, int | float) and isinstance(seconds, int | float)
                and isinstance(per_bucket, list) and len(per_bucket) == len(BUCKETS) + 1
                and all(isinstance(n, int | float) for n in per_bucket)
            )
            if shaped:
                yield route, method, status, count, seconds, per_bucket


def _pool_families(census: Census) -> Iterator[Metric]:
    for field, name, documentation in (
        ("in_use", "tasklist_db_pool_connections_in_use", "Pooled database connections held."),
        ("waiting", "tasklist_db_pool_waiting", "Callers waiting for a database connection."),
    ):
        total = 0
        for peer in census.peers:
            pool = peer.data.get("pool")
            value = pool.get(field) if isinstance(pool, dict) else None
            total += value if type(value) is int else 0
        yield GaugeMetricFamily(name, documentation, value=total)


def _server_families(servers: list[ServerRow]) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "tasklist_memcached_servers", "memcached servers the app is configured with.",
        value=len(servers),
    )
    yield GaugeMetricFamily(
        "tasklist_memcached_servers_up", "memcached servers answering, as this process sees them.",
        value=sum(1 for server in servers if server["state"] == "up" and server["stats"]),
    )


def _backlog_families(backlog: int | None) -> Iterator[Metric]:
    if backlog is not None:
        yield GaugeMetricFamily(
            "tasklist_invalidation_log_backlog",
            "Invalidations recorded and not yet delivered to the cache and forgotten.",
            value=backlog,
        )

"""The cache dashboard (/stats) and its data (/api/stats), and the hit-ratio history."""

from __future__ import annotations

import re

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from app.cache.history import HitRatioHistory
from app.cache.report import KINDS
from app.state import get_state
from app.web.stats import chart
from tests.support.clock import Clock

HX = {"HX-Request": "true", "HX-Request-Type": "partial"}


async def use_cache(app: Quart, namespace: str, *, hits: int, misses: int, sets: int) -> None:
    async with app.app_context():
        cache = get_state().cache
        key = cache.keys.key(namespace, "probe")
        for n in range(misses):
            assert await cache.get(cache.keys.key(namespace, "absent", n)) is None
        for _ in range(sets):
            assert await cache.set(key, {"v": 1}, ttl=60)
        for _ in range(hits):
            assert await cache.get(key) is not None


async def test_api_stats_reports_counts_and_ratio_per_kind(app: Quart, client: Client) -> None:
    await use_cache(app, "view", hits=3, misses=1, sets=1)
    response = await client.get("/api/stats")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    data = await response.get_json()
    assert set(data["kinds"]) == set(KINDS)
    assert data["kinds"]["view"] == {
        "hits": 3, "misses": 1, "sets": 1, "deletes": 0, "hit_ratio": 0.75
    }
    assert data["kinds"]["memoize"]["hit_ratio"] is None, "no lookups is not a 0% ratio"
    assert data["total"]["hits"] == 3


async def test_api_stats_reports_each_server(client: Client) -> None:
    data = await (await client.get("/api/stats")).get_json()
    (server,) = data["servers"]  # the in-process cache when no memcached is configured
    assert server["up"] is True and server["state"] == "up"
    for name in ("curr_items", "bytes", "evictions", "get_hits", "get_misses"):
        assert isinstance(server[name], int), name


async def test_dashboard_page_shows_kinds_servers_and_the_chart(app: Quart, client: Client) -> None:
    await use_cache(app, "session", hits=1, misses=1, sets=1)
    response = await client.get("/stats")
    assert response.status_code == 200
    assert {"hx-request", "hx-request-type"} <= {
        v.strip().lower() for v in response.headers["Vary"].split(",")
    }
    html = await response.get_data(as_text=True)
    assert html.startswith("<!doctype html>") and "<h1>Cache stats</h1>" in html
    for kind in KINDS:
        assert f'<tr id="kind-{kind}">' in html
    row = re.search(r'<tr id="kind-session">(.*?)</tr>', html, re.S)
    assert row and "50.0%" in row.group(1)
    assert '<svg class="chart"' in html and 'role="img"' in html
    assert 'hx-trigger="every 2s"' in html


async def test_dashboard_poll_gets_only_the_panel(client: Client) -> None:
    html = await (await client.get("/stats", headers=HX)).get_data(as_text=True)
    assert html.lstrip().startswith('<div id="stats-panel"')
    assert "<html" not in html and 'hx-trigger="every 2s"' in html


def test_history_ratio_is_per_interval_not_since_start() -> None:
    clock = Clock(1000.0)
    history = HitRatioHistory(interval=5, span=60, clock=clock)
    for hits, misses in ((0, 0), (90, 10), (90, 10), (91, 13)):
        history.record(hits, misses)
        clock.now += 5
    ratios = [point.ratio for point in history.points()]
    assert ratios == [0.9, None, 0.25]


def test_history_keeps_only_the_span() -> None:
    clock = Clock(1000.0)
    history = HitRatioHistory(interval=5, span=60, clock=clock)
    for n in range(100):
        history.record(n, 0)
        clock.now += 5
    points = history.points()
    assert len(points) == 12
    assert points[0].at >= clock.now - 60


def test_history_restarts_when_the_counters_go_back() -> None:
    clock = Clock(1000.0)
    history = HitRatioHistory(interval=5, span=60, clock=clock)
    for hits in (10, 20, 3, 4):
        history.record(hits, 0)
        clock.now += 5
    assert [p.lookups for p in history.points()] == [1]


def test_chart_breaks_the_line_where_there_were_no_lookups() -> None:
    points = [
        {"at": 100.0, "ratio": 1.0, "lookups": 1},
        {"at": 105.0, "ratio": 0.5, "lookups": 2},
        {"at": 110.0, "ratio": None, "lookups": 0},
        {"at": 115.0, "ratio": 0.0, "lookups": 1},
    ]
    drawn = chart({"span": 20.0, "interval": 5.0, "points": points}, width=200, height=100)
    assert drawn["paths"] == ["M50.0,0.0 L100.0,50.0"]
    assert drawn["dots"] == [(200.0, 100.0)]
    assert drawn["latest"] == 0.0


@pytest.mark.parametrize("path", ["/stats", "/api/stats"])
async def test_stats_are_never_cached(client: Client, path: str) -> None:
    assert (await client.get(path)).headers["Cache-Control"] == "no-store"

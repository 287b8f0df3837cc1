"""The cache dashboard (/stats) and its data (/api/stats), and the hit-ratio history."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from app import create_app
from app.cache.dashboard.history import HitRatioHistory, Point, summed
from app.cache.dashboard.peers import Peers
from app.cache.dashboard.report import KINDS
from app.settings import Settings, SettingsError
from app.state import get_state, make_cache_client
from app.web.stats import chart
from tests.support.clock import Clock
from tests.support.memcached import MemcachedProcess

HX = {"HX-Request": "true", "HX-Request-Type": "partial"}


async def use_cache(app: Quart, kind: str, *, hits: int, misses: int, sets: int) -> None:
    async with app.app_context():
        cache = get_state().cache_client
        key = cache.keys.key(kind, "probe")
        for n in range(misses):
            assert await cache.get(cache.keys.key(kind, "absent", n)) is None
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


def test_histories_of_several_processes_add_up_per_interval() -> None:
    a = [Point(100.02, 1.0, 2, 2), Point(105.01, 0.0, 1, 0)]
    b = [Point(99.9, 0.5, 2, 1), Point(110.0, None, 0, 0)]  # a clock 0.1 s behind
    assert summed([a, b], 5) == [
        Point(100, 0.75, 4, 3), Point(105, 0.0, 1, 0), Point(110, None, 0, 0)
    ]


def test_history_samples_on_the_wall_clocks_multiples_of_its_interval() -> None:
    history = HitRatioHistory(interval=5, span=60, clock=Clock(1002.0))
    assert history.until_next() == 3.0


def test_publish_interval_setting() -> None:
    env = {"APP_ENV": "development"}
    assert Settings.from_env(env).cache_stats_publish_seconds == 2.0
    assert Settings.from_env({**env, "CACHE_STATS_PUBLISH_SECONDS": "0.2"}) \
        .cache_stats_publish_seconds == 0.2
    for bad in ("0", "-1", "nan", "inf"):
        with pytest.raises(SettingsError, match="CACHE_STATS_PUBLISH_SECONDS"):
            Settings.from_env({**env, "CACHE_STATS_PUBLISH_SECONDS": bad})


# --- with memcached: every process's counts ---------------------------------------------


@pytest.fixture
async def shared_app(
    sqlite_database: str, memcached_server: MemcachedProcess
) -> AsyncIterator[Quart]:
    """The app on memcached, publishing every 0.2 s."""
    settings = Settings(
        write_rate_limit=0,
        env="development",
        database_url=sqlite_database,
        memcache_servers=(memcached_server.address,),
        cache_stats_publish_seconds=0.2,
        cache_retry_timeout=0.3,
        cache_dead_timeout=0.8,
    )
    app = create_app(settings)
    async with app.test_app():
        yield app


OTHER_POINT_AT = 5.0 * round(time.time() / 5) - 60  # a sampling time before the app started


@pytest.fixture
async def other_process(memcached_server: MemcachedProcess) -> AsyncIterator[Peers]:
    """Another app process publishing to the same memcached (its counts are made up)."""
    settings = Settings(
        write_rate_limit=0, env="development", memcache_servers=(memcached_server.address,)
    )
    cache = make_cache_client(settings)
    kinds = {"view": {"hits": 10, "misses": 5, "sets": 5, "deletes": 1}}
    history = [{"at": OTHER_POINT_AT, "ratio": 0.5, "lookups": 4, "hits": 2}]
    peers = Peers(cache, lambda: {"kinds": kinds, "history": history}, interval=0.2)
    assert await peers.publish()
    yield peers
    await cache.close()


async def test_api_stats_sums_the_counts_of_every_process(
    shared_app: Quart, other_process: Peers
) -> None:
    await use_cache(shared_app, "view", hits=3, misses=1, sets=1)
    data = await (await shared_app.test_client().get("/api/stats")).get_json()
    processes = data["processes"]
    assert processes["reporting"] == 2 and processes["complete"] is True
    this, other = processes["items"]  # oldest first
    assert this["current"] is True and other["current"] is False
    assert other["id"] == other_process.id and other["pid"] == other_process.pid
    assert this["kinds"]["view"] == {
        "hits": 3, "misses": 1, "sets": 1, "deletes": 0, "hit_ratio": 0.75
    }
    assert data["kinds"]["view"] == {
        "hits": 13, "misses": 6, "sets": 6, "deletes": 1, "hit_ratio": 13 / 19
    }
    for metric in ("hits", "misses", "sets", "deletes"):
        assert data["total"][metric] == this["total"][metric] + other["total"][metric]
    assert processes["publish_interval"] == 0.2 and processes["ttl"] == 2
    assert data["history"]["points"][0] == {
        "at": OTHER_POINT_AT, "ratio": 0.5, "lookups": 4, "hits": 2
    }


async def test_dashboard_shows_each_process_and_drops_a_withdrawn_one(
    shared_app: Quart, other_process: Peers
) -> None:
    client = shared_app.test_client()
    html = await (await client.get("/stats", headers=HX)).get_data(as_text=True)
    assert "2 processes reporting" in html
    assert f'<tr data-process="{other_process.id}">' in html
    assert html.count('aria-current="true"') == 1, "this process is marked"
    await other_process.withdraw()
    html = await (await client.get("/stats", headers=HX)).get_data(as_text=True)
    assert "1 process reporting" in html and other_process.id not in html


async def test_dashboard_with_memcached_down_shows_this_process_and_says_so(
    shared_app: Quart, other_process: Peers, memcached_server: MemcachedProcess
) -> None:
    await use_cache(shared_app, "view", hits=0, misses=2, sets=0)
    memcached_server.kill()
    client = shared_app.test_client()
    response = await client.get("/api/stats")
    assert response.status_code == 200
    data = await response.get_json()
    assert data["processes"]["reporting"] == 1 and data["processes"]["complete"] is False
    assert data["kinds"]["view"]["misses"] == 2, "this process's own counts, from memory"
    html = await (await client.get("/stats")).get_data(as_text=True)
    assert "1 process reporting" in html and "could not be read" in html

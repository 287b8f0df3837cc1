"""One dashboard for the whole app, however many processes serve it: two app processes
sharing PostgreSQL and two memcached servers show the same totals, summed over both,
through either of them.

Everything is real: `hypercorn 'app:create_app()'` processes configured by the environment
only, memcached processes, a fresh PostgreSQL database migrated by Alembic. Each process
publishes every 0.2 s (TTL 2 s), so the waits are short.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.cluster import Cluster
from tests.support.cluster import cluster as app_processes

pytestmark = pytest.mark.postgres

COUNTS = ("hits", "misses", "sets", "deletes")
TTL = 2  # of a 0.2 s publish interval (`app.cache.dashboard.peers`)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = {
        "CACHE_STATS_PUBLISH_SECONDS": "0.2",
        "CACHE_RETRY_TIMEOUT": "0.5",
        "CACHE_DEAD_TIMEOUT": "1",
    }
    with app_processes(tmp_path_factory.mktemp("stats-two-processes"), env) as processes:
        yield processes


async def traffic(client: httpx.AsyncClient, urls: tuple[str, ...], rounds: int) -> Counter[int]:
    """Writes and reads through every process in turn; the status codes seen."""
    statuses: Counter[int] = Counter()
    for n in range(rounds):
        url = urls[n % len(urls)]
        for response in (
            await client.post(f"{url}/", data={"name": f"t-{uuid.uuid4().hex[:8]}"}),
            await client.get(f"{url}/"),
            await client.get(f"{url}/", headers={"HX-Request": "true"}),
            await client.get(f"{url}/api/tasks"),
            await client.get(f"{url}/api/stats"),
            await client.get(f"{url}/stats"),
        ):
            statuses[response.status_code] += 1
    return statuses


async def agreed_stats(
    client: httpx.AsyncClient, urls: tuple[str, ...], reporting: int, within: float = 5
) -> list[dict[str, Any]]:
    """`/api/stats` through each of `urls` once they all show `reporting` processes, the
    same totals and the same rows (the processes publish every 0.2 s)."""
    deadline = time.monotonic() + within
    while True:
        seen = [(await client.get(f"{url}/api/stats")).json() for url in urls]
        views = [(s["processes"]["reporting"], s["total"], _rows(s)) for s in seen]
        if views[0][0] == reporting and all(view == views[0] for view in views):
            return seen
        assert time.monotonic() < deadline, f"no agreement on {reporting} processes: {views}"
        await asyncio.sleep(0.1)


async def shows_only(
    client: httpx.AsyncClient, url: str, expected: set[str], within: float
) -> None:
    """Wait until `/api/stats` through `url` lists exactly the processes `expected` (on a
    loaded machine a live process's entry may lapse for a moment and come back with its
    next publication, so a count of two is not yet the right two)."""
    deadline = time.monotonic() + within
    while (found := ids(await _stats(client, url))) != expected:
        assert time.monotonic() < deadline, f"{found} listed, not {expected}"
        await asyncio.sleep(0.1)


def _rows(stats: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(item["id"], item["total"]) for item in stats["processes"]["items"]]


def ids(stats: dict[str, Any]) -> set[str]:
    return {item["id"] for item in stats["processes"]["items"]}


async def test_either_process_shows_the_same_totals_summed_over_both(cluster: Cluster) -> None:
    async with httpx.AsyncClient(timeout=10, follow_redirects=True) as client:
        statuses = await traffic(client, cluster.urls, rounds=10)
        assert set(statuses) == {200}, statuses
        seen = await agreed_stats(client, cluster.urls, reporting=2)
        pages = [(await client.get(f"{url}/stats")).text for url in cluster.urls]

    for stats in seen:
        items = stats["processes"]["items"]
        assert stats["processes"]["complete"] is True
        for metric in COUNTS:
            assert stats["total"][metric] == sum(item["total"][metric] for item in items)
            for kind, row in stats["kinds"].items():
                assert row[metric] == sum(item["kinds"][kind][metric] for item in items)
        assert all(item["total"]["hits"] + item["total"]["misses"] > 0 for item in items), (
            "both processes served traffic"
        )
    answered_by = [next(i["id"] for i in s["processes"]["items"] if i["current"]) for s in seen]
    assert len(set(answered_by)) == 2, "each answer came from a different process"
    assert all("2 processes reporting" in page for page in pages)


async def test_no_5xx_while_a_memcached_is_killed_and_restarted(cluster: Cluster) -> None:
    victim = cluster.memcached[0]
    async with httpx.AsyncClient(timeout=10, follow_redirects=True) as client:
        running = [
            asyncio.create_task(traffic(client, cluster.urls, rounds=12)) for _ in range(3)
        ]
        try:
            await asyncio.sleep(0.5)
            victim.kill()
            down = await traffic(client, cluster.urls, rounds=4)  # during the outage
            degraded = [(await client.get(f"{url}/api/stats")).json() for url in cluster.urls]
            victim.start()  # same port, empty
            statuses = sum((await asyncio.gather(*running)), down)
        finally:
            if not victim.running:
                victim.start()
        assert set(statuses) == {200}, statuses
        assert all(s["processes"]["reporting"] == 2 for s in degraded), [
            _rows(s) for s in degraded
        ]
        # Back to normal once each process has probed the restarted server again.
        await agreed_stats(client, cluster.urls, reporting=2)

        async def complete() -> bool:
            seen = await agreed_stats(client, cluster.urls, reporting=2)
            return all(s["processes"]["complete"] for s in seen)

        deadline = time.monotonic() + 5
        while not await complete():
            assert time.monotonic() < deadline, "the restarted server is still unread"
            await asyncio.sleep(0.1)


async def test_a_stopped_process_drops_out_at_once_and_a_killed_one_within_its_ttl(
    cluster: Cluster,
) -> None:
    a = cluster.urls[0]
    async with httpx.AsyncClient(timeout=10) as client:
        before = ids(await _stats(client, a))
        with cluster.another("c") as stopped:
            joined = (await agreed_stats(client, (a, stopped.url), reporting=3))[1]
        assert ids(await _stats(client, a)) == before, "withdrawn on a clean shutdown"
        assert ids(joined) - before

        with cluster.another("d") as killed:
            (stats,) = await agreed_stats(client, (killed.url,), reporting=3)
            worker = next(i for i in stats["processes"]["items"] if i["current"])
            os.kill(worker["pid"], signal.SIGKILL)  # no shutdown: its entry stays until its TTL
            killed_at = time.monotonic()
            assert worker["id"] in ids(await _stats(client, a))
            await shows_only(client, a, before, within=TTL + 2)
            assert time.monotonic() - killed_at <= TTL + 1.5


async def _stats(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
    stats: dict[str, Any] = (await client.get(f"{url}/api/stats")).json()
    return stats

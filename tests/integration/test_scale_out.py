"""Scale-out as deployed: two replicas of the image (its CMD and ENV, two workers each) share
one PostgreSQL and two memcached servers. Writes through one replica are seen through the
other at once, while one memcached is killed and restarted; nothing answers 5xx; and the
dashboard through either replica shows the same totals, over all four worker processes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest

from tests.support.cluster import cluster
from tests.support.deploy import image_command, image_environment
from tests.support.memcached import MemcachedProcess
from tests.support.servers import LiveServer

pytestmark = pytest.mark.postgres

OPERATOR_TOKEN = "scale-out-operator"
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}

WRITERS = 6
SECONDS = 6.0
WORKERS = 2  # per replica

Replicas = tuple[tuple[LiveServer, LiveServer], tuple[MemcachedProcess, MemcachedProcess]]


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    command = image_command()
    assert command[:2] == ["sh", "-c"]
    env = {
        **image_environment(),
        "SECRET_KEY": "scale-out-secret",
        "WEB_CONCURRENCY": str(WORKERS),
        "CACHE_DEAD_TIMEOUT": "2",  # a restarted server is back in use within 2 s
        "CACHE_STATS_PUBLISH_SECONDS": "0.5",
        "OPERATOR_TOKEN": OPERATOR_TOKEN,  # production: the dashboard needs it
    }
    logs = tmp_path_factory.mktemp("scale-out")
    with cluster(logs, env, command=command[2]) as replicas:
        (a, b), (first, second) = replicas.servers, replicas.memcached
        yield (a, b), (first, second)


def test_writes_through_one_replica_are_read_through_the_other_at_once(replicas: Replicas) -> None:
    (a, b), (memcached, _) = replicas
    statuses: Counter[int] = Counter()
    stale: list[str] = []
    pairs = 0

    async def writer(number: int) -> None:
        nonlocal pairs
        write, read = (a, b) if number % 2 else (b, a)
        deadline = time.monotonic() + SECONDS
        async with httpx.AsyncClient(timeout=10) as http:
            while time.monotonic() < deadline:
                name = f"w{number}-{uuid.uuid4().hex[:8]}"
                created = await http.post(f"{write.url}/api/tasks", json={"name": name})
                statuses[created.status_code] += 1
                if created.status_code != 201:
                    continue
                task = created.json()
                one = await http.get(f"{read.url}/api/tasks/{task['id']}")
                page = await http.get(f"{read.url}/")
                statuses[one.status_code] += 1
                statuses[page.status_code] += 1
                pairs += 1
                if one.status_code != 200 or one.json()["name"] != name:
                    stale.append(f"GET /api/tasks/{task['id']} via {read.url}: {one.text[:200]}")
                if name not in page.text:
                    stale.append(f"GET / via {read.url} lacks {name} (X-Cache "
                                 f"{page.headers.get('x-cache')})")

    async def outage() -> None:
        await asyncio.sleep(SECONDS / 3)
        memcached.kill()
        await asyncio.sleep(1.5)
        memcached.start()

    async def run() -> None:
        await asyncio.gather(outage(), *(writer(n) for n in range(WRITERS)))

    asyncio.run(run())
    assert not [s for s in statuses if s >= 500], statuses
    assert stale == []
    assert pairs > 50, statuses


def test_the_dashboard_through_either_replica_shows_the_same_totals(replicas: Replicas) -> None:
    (a, b), _ = replicas
    processes = 2 * WORKERS
    deadline = time.monotonic() + 15
    with httpx.Client(timeout=10) as http:
        for _ in range(20):  # traffic through every worker of both
            for server in (a, b):
                assert http.get(f"{server.url}/").status_code == 200
        while True:
            views = [
                http.get(f"{server.url}/api/stats", headers=OPERATOR).json() for server in (a, b)
            ]
            reporting = [v["processes"]["reporting"] for v in views]
            totals = [v["total"] for v in views]
            if reporting == [processes] * 2 and totals[0] == totals[1] and all(
                v["processes"]["complete"] for v in views
            ):
                break
            assert time.monotonic() < deadline, f"reporting {reporting}, totals {totals}"
            time.sleep(0.25)
    for view in views:
        rows = view["processes"]["items"]
        assert {row["pid"] for row in rows} and len(rows) == processes
        for count in ("hits", "misses", "sets"):
            assert view["total"][count] == sum(row["total"][count] for row in rows)
    assert views[0]["total"]["hits"] > 0

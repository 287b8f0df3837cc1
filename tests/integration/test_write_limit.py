"""The write limit (`WRITE_RATE_LIMIT`) across two app processes sharing memcached: the
31st write of a client in a minute is refused whichever process answers, in each of its
forms, and stores nothing; another client is unaffected; reads never are; a concurrent
burst stores exactly the limit; a spoofed `X-Forwarded-For` changes nothing unless it comes
from a trusted proxy; with memcached stopped, writes go through."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.cluster import Cluster, cluster

pytestmark = pytest.mark.postgres

LIMIT = 30
HTMX = {"HX-Request": "true", "HX-Request-Type": "partial"}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env = {"WRITE_RATE_LIMIT": str(LIMIT), "FORWARDED_ALLOW_IPS": "127.0.0.9"}
    with cluster(tmp_path_factory.mktemp("write-limit"), env) as processes:
        yield processes


def from_address(address: str) -> httpx.Client:
    """A client whose connections come from `address` (any 127.x.y.z reaches the app)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=10)


def within_one_window(seconds: float = 15) -> None:
    """Wait, if need be, until the minute (the limit's window) has `seconds` left."""
    left = 60 - time.time() % 60
    if left < seconds:
        time.sleep(left + 0.1)


def stored(url: str) -> set[str]:
    return {task["name"] for task in httpx.get(f"{url}/api/tasks?limit=100").json()["items"]}


def test_the_limit_holds_across_processes_in_every_form(limited: Cluster) -> None:
    first, second = limited.urls
    within_one_window()
    with from_address("127.0.0.2") as client:
        for n in range(LIMIT):
            url = (first, second)[n % 2]
            response = client.post(f"{url}/api/tasks", json={"name": f"client 2 write {n}"})
            assert response.status_code == 201, (n, response.text)
        refused = [
            client.post(f"{first}/api/tasks", json={"name": "one too many"}),
            client.post(f"{second}/api/tasks", json={"name": "one too many"}),
            client.post(f"{second}/", data={"name": "one too many"}),
            client.post(f"{first}/", data={"name": "one too many"}, headers=HTMX),
            client.post(f"{first}/api/tasks", json={"name": "one too many"},
                        headers={"X-Forwarded-For": "198.51.100.7"}),  # not a trusted proxy
        ]
        for response in refused:
            assert response.status_code == 429, response.text
            assert 1 <= int(response.headers["Retry-After"]) <= 60
            assert "at most 30 a minute" in response.text
        api, _, page, htmx, _ = refused
        assert api.headers["Content-Type"] == "application/problem+json"
        assert api.json()["status"] == 429
        assert page.headers["Content-Type"].startswith("text/html") and "<html" in page.text
        assert htmx.headers["HX-Retarget"] == "#flashes" and "<html" not in htmx.text
        # Reads are never limited.
        assert client.get(f"{first}/").status_code == 200
        assert client.get(f"{second}/api/tasks").status_code == 200
    assert "one too many" not in stored(first)
    with from_address("127.0.0.3") as other:
        answer = other.post(f"{second}/api/tasks", json={"name": "another client"})
        assert answer.status_code == 201


def test_a_concurrent_burst_stores_exactly_the_limit(limited: Cluster) -> None:
    within_one_window()
    names = [f"burst {n}" for n in range(100)]

    async def burst() -> Counter[int]:
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.4")
        async with httpx.AsyncClient(transport=transport, timeout=30) as client:
            answers = await asyncio.gather(*(
                client.post(f"{limited.urls[n % 2]}/api/tasks", json={"name": name})
                for n, name in enumerate(names)
            ))
        return Counter(answer.status_code for answer in answers)

    assert asyncio.run(burst()) == {201: LIMIT, 429: 100 - LIMIT}
    listed = httpx.get(f"{limited.urls[0]}/api/tasks?limit=100&offset=0").json()
    assert len([t for t in listed["items"] if t["name"].startswith("burst ")]) == LIMIT


def test_a_trusted_proxys_forwarded_client_is_the_one_counted(limited: Cluster) -> None:
    """From the trusted proxy (127.0.0.9), each forwarded client has its own limit."""
    within_one_window()
    with from_address("127.0.0.9") as proxy:
        for n in range(LIMIT):
            forwarded = {"X-Forwarded-For": "203.0.113.5"}
            answer = proxy.post(f"{limited.urls[n % 2]}/api/tasks",
                                json={"name": f"proxied {n}"}, headers=forwarded)
            assert answer.status_code == 201
        over = proxy.post(f"{limited.urls[0]}/api/tasks", json={"name": "proxied over"},
                          headers={"X-Forwarded-For": "203.0.113.5"})
        assert over.status_code == 429
        # The client's own claim further left changes nothing: the proxy's entry counts.
        spoofed = proxy.post(f"{limited.urls[1]}/api/tasks", json={"name": "proxied over"},
                             headers={"X-Forwarded-For": "10.1.1.1, 203.0.113.5"})
        assert spoofed.status_code == 429
        another = proxy.post(f"{limited.urls[1]}/api/tasks", json={"name": "proxied other"},
                             headers={"X-Forwarded-For": "203.0.113.6"})
        assert another.status_code == 201


def test_with_memcached_stopped_writes_go_through(tmp_path: Path) -> None:
    env = {"WRITE_RATE_LIMIT": "2", "CACHE_RETRY_TIMEOUT": "0.5", "CACHE_DEAD_TIMEOUT": "60"}
    with cluster(tmp_path, env, processes=1, memcached=1) as app:
        url = app.urls[0]
        assert httpx.get(f"{url}/readyz").json()["write_limit"] == "ok"
        within_one_window()
        statuses = [httpx.post(f"{url}/api/tasks", json={"name": f"w{n}"}).status_code
                    for n in range(3)]
        assert statuses == [201, 201, 429]
        app.memcached[0].kill()
        for n in range(5):
            answer = httpx.post(f"{url}/api/tasks", json={"name": f"down {n}"}, timeout=10)
            assert answer.status_code == 201, answer.text
        readiness = httpx.get(f"{url}/readyz").json()
        assert readiness["cache"] == "degraded" and readiness["write_limit"] == "failing open"
        assert {f"down {n}" for n in range(5)} <= stored(url)


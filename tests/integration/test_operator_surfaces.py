"""The operator surfaces (`/stats`, `/api/stats`, `/metrics`) as a stranger and as an
operator meet them: absent in production without `OPERATOR_TOKEN`, 401 without or with a
wrong credential, open with it (Bearer, or Basic's password), never stored by a cache, and
`/metrics` summed over every process of the app, read by Prometheus' own parser."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from tests.support.cluster import Cluster, cluster

pytestmark = pytest.mark.postgres

TOKEN = "operator-test-token-7f3a"
SURFACES = ("/stats", "/api/stats", "/metrics")
PUBLISH = 0.2  # CACHE_STATS_PUBLISH_SECONDS: how often each process publishes its figures


def basic(password: str, user: str = "anyone") -> dict[str, str]:
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two production processes with an operator token."""
    env = {
        "APP_ENV": "production",
        "SECRET_KEY": "operator-surfaces-secret",
        "OPERATOR_TOKEN": TOKEN,
        "CACHE_STATS_PUBLISH_SECONDS": str(PUBLISH),
    }
    with cluster(tmp_path_factory.mktemp("operator"), env) as processes:
        yield processes


@pytest.mark.parametrize("path", SURFACES)
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-the-token"},
        basic("not-the-token"),
        basic(TOKEN[:-1]),
        {"Authorization": f"Basic {TOKEN}"},  # not base64 of user:password
        {"Authorization": TOKEN},  # no scheme
        {"Authorization": f"Digest {TOKEN}"},
    ],
    ids=["none", "wrong-bearer", "wrong-basic", "prefix", "raw-basic", "no-scheme", "digest"],
)
def test_without_the_credential_every_surface_is_401_through_either_process(
    guarded: Cluster, path: str, headers: dict[str, str]
) -> None:
    for url in guarded.urls:
        response = httpx.get(url + path, headers=headers)
        assert response.status_code == 401, response.text
        challenges = response.headers.get_list("WWW-Authenticate")
        assert any(c.startswith("Basic realm=") for c in challenges), challenges
        assert any(c.startswith("Bearer realm=") for c in challenges), challenges
        assert response.headers["Cache-Control"] == "no-store"
        assert "tasklist_cache" not in response.text and "memcached" not in response.text
        if path.startswith("/api/"):
            assert response.headers["Content-Type"] == "application/problem+json"


@pytest.mark.parametrize("path", SURFACES)
@pytest.mark.parametrize("headers", [BEARER, basic(TOKEN), basic(TOKEN, user="")])
def test_with_the_credential_every_surface_answers_and_is_never_stored(
    guarded: Cluster, path: str, headers: dict[str, str]
) -> None:
    for url in guarded.urls:
        response = httpx.get(url + path, headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["Cache-Control"] == "no-store"
        assert "x-cache" not in response.headers  # the view cache was not asked


def test_the_dashboards_htmx_polling_works_once_logged_in(guarded: Cluster) -> None:
    poll = {"HX-Request": "true", "HX-Request-Type": "partial", **basic(TOKEN)}
    response = httpx.get(guarded.urls[0] + "/stats", headers=poll)
    assert response.status_code == 200
    assert "<html" not in response.text.lower() and "hx-trigger" in response.text


def test_the_token_is_never_logged(guarded: Cluster) -> None:
    for headers in (BEARER, basic(TOKEN), {"Authorization": "Bearer wrong-token-x"}):
        httpx.get(guarded.urls[0] + "/metrics", headers=headers)
    time.sleep(0.2)  # the request log writes its lines within 50 ms
    for server in guarded.servers:
        log = server.log.read_text()
        assert "/metrics" in log or server is not guarded.servers[0]
        assert TOKEN not in log and "wrong-token-x" not in log
        assert base64.b64encode(f"anyone:{TOKEN}".encode()).decode() not in log


def test_public_pages_link_the_dashboard_only_for_operators(guarded: Cluster) -> None:
    url = guarded.urls[0]
    anonymous = [httpx.get(url + "/") for _ in range(2)]  # the second from the view cache
    assert anonymous[1].headers["X-Cache"] == "hit"
    assert all('href="/stats"' not in page.text for page in anonymous)
    operator = httpx.get(url + "/", headers=basic(TOKEN))
    assert 'href="/stats"' in operator.text
    assert operator.headers["X-Cache"] == "bypass"  # a page with credentials is never stored
    after = httpx.get(url + "/")
    assert 'href="/stats"' not in after.text


def test_in_production_without_a_token_the_surfaces_are_absent(tmp_path: Path) -> None:
    env = {"APP_ENV": "production", "SECRET_KEY": "no-operator-secret"}
    with cluster(tmp_path, env, processes=1, memcached=1) as app:
        for path in SURFACES:
            for headers in ({}, BEARER, basic("")):
                response = httpx.get(app.urls[0] + path, headers=headers)
                assert response.status_code == 404, (path, headers)
        assert 'href="/stats"' not in httpx.get(app.urls[0] + "/").text


def test_in_development_without_a_token_the_surfaces_are_open(tmp_path: Path) -> None:
    with cluster(tmp_path, {}, processes=1, memcached=1) as app:
        for path in SURFACES:
            assert httpx.get(app.urls[0] + path).status_code == 200, path
        assert 'href="/stats"' in httpx.get(app.urls[0] + "/").text


# --- /metrics ----------------------------------------------------------------------------


def scrape(url: str) -> dict[str, list[Sample]]:
    response = httpx.get(url + "/metrics", headers=BEARER)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        family.name: family.samples for family in text_string_to_metric_families(response.text)
    }


def value(samples: list[Sample], name: str, **labels: str) -> float:
    matching = [
        s.value for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    return sum(matching)


def test_metrics_sum_every_process_whichever_answers(guarded: Cluster) -> None:
    """Requests sent to each process alone show, summed, in a scrape through either one."""
    first, second = guarded.urls
    before = [scrape(url) for url in guarded.urls]
    with httpx.Client() as http:
        for _ in range(7):
            assert http.get(first + "/healthz").status_code == 200
        for _ in range(5):
            assert http.get(second + "/healthz").status_code == 200
    time.sleep(PUBLISH * 5)  # each process has published since
    for url, earlier in zip(guarded.urls, before, strict=True):
        families = scrape(url)
        requests = families["tasklist_http_requests"]
        grown = value(requests, "tasklist_http_requests_total", route="/healthz", status="200") - \
            value(earlier["tasklist_http_requests"], "tasklist_http_requests_total",
                  route="/healthz", status="200")
        assert grown == 12, url
        latency = families["tasklist_http_request_duration_seconds"]
        count = value(latency, "tasklist_http_request_duration_seconds_count", route="/healthz")
        inf = value(latency, "tasklist_http_request_duration_seconds_bucket",
                    route="/healthz", le="+Inf")
        assert count == inf >= 12
        assert value(families["tasklist_processes"], "tasklist_processes") == 2
        assert value(families["tasklist_memcached_servers_up"],
                     "tasklist_memcached_servers_up") == 2
        assert "tasklist_db_pool_connections_in_use" in families
        assert "tasklist_db_pool_waiting" in families
        assert "tasklist_invalidation_log_backlog" in families
        for metric in ("hits", "misses", "sets", "deletes"):
            kinds = {s.labels["kind"] for s in families[f"tasklist_cache_{metric}"]}
            assert kinds == {"memoize", "view", "fragment", "session"}


def test_metrics_count_the_view_caches_shared_hits(guarded: Cluster) -> None:
    """A page one process stored is a view hit in memcached for the other (a process
    serves its own recent pages from memory: those read only the generation tokens)."""
    first, second = guarded.urls
    url = first
    hits = value(scrape(url)["tasklist_cache_hits"], "tasklist_cache_hits_total", kind="view")
    httpx.post(first + "/api/tasks", json={"name": "a new page"})
    assert httpx.get(first + "/").headers["X-Cache"] == "miss"
    assert httpx.get(second + "/").headers["X-Cache"] == "hit"
    time.sleep(PUBLISH * 5)
    after = value(scrape(url)["tasklist_cache_hits"], "tasklist_cache_hits_total", kind="view")
    assert after >= hits + 1
    routes = {s.labels["route"] for s in scrape(url)["tasklist_http_requests"]}
    assert "/" in routes and "/metrics" in routes
    assert not any(route.startswith("/api/tasks/") and route[-1].isdigit() for route in routes)

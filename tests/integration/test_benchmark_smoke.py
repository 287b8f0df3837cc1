"""`bench/http_benchmark.py --smoke` runs end to end and writes well-formed results.

The whole pipeline, for real: its own PostgreSQL database and memcached, hypercorn as in
production, the baselines, wrk, the write-then-read loop, the JSON and the chart. Asserts
what a run must hold whatever the machine: every kind of case measured (a positive rate),
Q measured, every ratio paired with the Q (and, cached, H) runs beside it, no stale read, no
failed request in the cached cases. No rates are compared.

The smoke run's one size (150 tasks) is above a page, so the next page is always measured;
gzip is checked only when the app serves it.

The side-by-side with the tutorial app (bench/side_by_side.py) needs the tutorial, so only
the parts of it that run without it are checked here: the round-trip table of this app alone
(`--round-trips-only --no-peer`) and the delay proxy it is built on (a round trip through it
takes twice its delay, and it uses no CPU while nothing flows: sanity bounds only).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import pytest

from app.settings import PROJECT_ROOT
from bench.delay_proxy import DelayProxy
from bench.harness import cpu_seconds
from tests.support.memcached import MemcachedProcess

pytestmark = pytest.mark.postgres

SCRIPT = PROJECT_ROOT / "bench" / "http_benchmark.py"
SIDE_BY_SIDE = PROJECT_ROOT / "bench" / "side_by_side.py"
ROUND_TRIP_PATHS = {"cached GET /", "uncached GET /", "write", "GET / after a write"}
DELAY_MS = 5.0  # large beside this machine's wake-up latency (tens of microseconds)
WRK = "/usr/bin/wrk"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIZES = (150,)  # --smoke's task counts, on PostgreSQL and on MariaDB
HANG_GUARD = 600  # seconds: only so that a stuck server cannot hang the test run
APP_CASES = {
    ("page", "GET /"), ("page", "GET / gzip"), ("api", "GET /api/tasks"),
    ("api", "GET /api/tasks gzip"), ("fragment", "GET / htmx fragment"),
}
BASELINES = {("quart_app", "asyncio"), ("asgi_app", "asyncio"), ("hit_floor_app", "asyncio"),
             ("hit_floor_app", "uvloop"), ("quart_app", "uvloop")}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> dict[str, Any]:
    """One smoke run, shared by the tests below. `postgres_url` is requested for its check
    only: it fails (or skips, on purpose) with a clear message when PostgreSQL is missing."""
    if not os.access(WRK, os.X_OK):
        pytest.fail(f"{WRK} is missing: run `make test` (it apt-installs wrk) "
                    "or apt-get install wrk", pytrace=False)
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(out)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=HANG_GUARD)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-5000:]}\nstderr:\n{done.stderr[-5000:]}"
    assert (out / "http.png").read_bytes().startswith(PNG_SIGNATURE)
    found: dict[str, Any] = json.loads((out / "http.json").read_text())
    return found


def cases(results: dict[str, Any], group: str) -> list[dict[str, Any]]:
    return [c for c in results["cases"] if c["group"] == group]


def test_every_app_case_is_measured_cached_and_uncached(results: dict[str, Any]) -> None:
    measured = {(c["group"], c["case"], c["cache"], c["tasks"]) for c in results["cases"]
                if c["group"] in ("page", "api", "fragment") and c["rps"] > 0}
    expected = {(group, case, cache, tasks) for group, case in APP_CASES
                for cache in ("on", "off") for tasks in SIZES}
    assert expected <= measured


def test_q_and_the_baselines(results: dict[str, Any]) -> None:
    assert results["q"]["median"] > 0
    baselines = cases(results, "baseline")
    assert {(c["app"], c["loop"]) for c in baselines if c["rps"] > 0} == BASELINES
    assert all(c["body_bytes"] == 5120 and c["non_2xx"] == 0 for c in baselines)


def test_every_rate_is_paired_with_the_q_runs_beside_it(results: dict[str, Any]) -> None:
    assert results["slots"] and all(slot["q"] > 0 for slot in results["slots"])
    assert results["floor"]["median"] > 0
    rated = [c for c in results["cases"] if "skipped" not in c]
    for case in rated:
        rounds = case["per_round"]
        assert len(rounds) == 1 and case["in_q"] > 0, case  # --smoke: one round
        assert all(r["q_before"] > 0 and r["q_after"] > 0 for r in rounds)
        if case.get("cache") == "on":
            assert case["in_floor"] > 0, case
            if case["group"] == "304":
                assert case["compared_200"]["in_q"] > 0 < case["compared_200"]["in_floor"]
        else:
            assert "in_floor" not in case, case


def test_not_modified_is_compared_with_the_cached_200(results: dict[str, Any]) -> None:
    compared = cases(results, "304")
    assert {c["tasks"] for c in compared} == set(SIZES)
    for case in compared:
        assert case["status"] == 304
        assert case["rps"] > 0 and case["compared_200"]["rps"] > 0


def test_the_next_page_is_measured(results: dict[str, Any]) -> None:
    pages = cases(results, "next")
    assert {(c["cache"], c["tasks"]) for c in pages} == {
        (cache, tasks) for cache in ("on", "off") for tasks in SIZES
    }
    for page in pages:  # 150 tasks: more than a page
        assert "skipped" not in page, page
        assert page["rps"] > 0 and page["path"].startswith("/?"), page


def test_cached_cases_all_succeed(results: dict[str, Any]) -> None:
    cached = [c for c in results["cases"] if c.get("cache") == "on" and "skipped" not in c]
    assert cached
    for case in cached:
        assert case["non_2xx"] == 0, case
        assert case["x_cache"] == "hit" or case["group"] == "304", case


def test_gzip_when_served_is_smaller(results: dict[str, Any]) -> None:
    for group, plain_case in (("page", "GET /"), ("api", "GET /api/tasks")):
        for zipped in (c for c in cases(results, group) if c["case"] == plain_case + " gzip"):
            plain = next(c for c in cases(results, group) if c["case"] == plain_case
                         and (c["cache"], c["tasks"]) == (zipped["cache"], zipped["tasks"]))
            assert zipped["content_encoding"] in ("gzip", "identity")
            if zipped["content_encoding"] == "gzip":
                assert zipped["body_bytes"] < plain["body_bytes"]


def test_the_mysql_column_is_measured_beside_postgresql(results: dict[str, Any]) -> None:
    mariadb = cases(results, "mysql")
    assert {(c["cache"], c["tasks"]) for c in mariadb if c["rps"] > 0} == {
        (cache, tasks) for cache in ("on", "off") for tasks in SIZES
    }


def test_write_then_read_has_no_stale_read(results: dict[str, Any]) -> None:
    loops = cases(results, "write-read")
    assert {(c["database"], c["invalidation_log"]) for c in loops} == {
        ("postgres", True), ("postgres", False), ("mariadb", True)
    }
    for loop in loops:
        assert loop["pairs"] > 0 and loop["pairs_per_s"] > 0
        assert loop["stale"] == 0, loop["stale_examples"]
        assert loop["errors"] == 0, loop["error_examples"]


def test_diagnostics_are_computed(results: dict[str, Any]) -> None:
    assert results["diagnostics"]
    assert all(check["met"] in (True, False, None) and check["detail"]
               for check in results["diagnostics"])


@pytest.fixture(scope="module")
def round_trips(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> dict[str, Any]:
    """The round-trip table of this app alone, a few requests a path."""
    out = tmp_path_factory.mktemp("round-trips")
    done = subprocess.run([sys.executable, str(SIDE_BY_SIDE), "--round-trips-only", "--no-peer",
                           "--sizes", "10", "--requests", "3", "--out", str(out)],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=HANG_GUARD)
    assert done.returncode == 0, f"stdout:\n{done.stdout[-5000:]}\nstderr:\n{done.stderr[-5000:]}"
    assert "#### Round trips per request" in done.stdout
    found: dict[str, Any] = json.loads((out / "side_by_side.json").read_text())["round_trips"]
    return found


def test_round_trips_are_counted_for_every_path(round_trips: dict[str, Any]) -> None:
    paths = {r["path"]: r for r in round_trips["paths"]}
    assert set(paths) == ROUND_TRIP_PATHS
    for row in paths.values():
        assert row["app"] == "this app" and row["tasks"] == 10 and row["requests"] == 3, row
        assert set(row["statuses"]) <= {200, 201}, row
        for key in ("db_before", "mc_before", "db_after", "mc_after", "db_connections",
                    "mc_connections"):
            low, high = row[key + "_range"]
            assert 0 <= low <= row[key] <= high, (key, row)
    assert paths["write"]["db_before"] >= 1  # a write reaches the database before its answer
    assert {(i["app"], i["cache"]) for i in round_trips["idle"]} == {
        ("this app", "on"), ("this app", "off")
    }


def test_the_delay_proxy_delays_each_way_counts_turns_and_idles(
    memcached: MemcachedProcess,
) -> None:
    delay = DELAY_MS / 1000
    with DelayProxy({"mc": memcached.address}, DELAY_MS) as proxy:
        host, _, port = proxy.address("mc").rpartition(":")
        with socket.create_connection((host, int(port))) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            trips = []
            for _ in range(11):
                started = time.monotonic()
                sock.sendall(b"version\r\n")
                assert sock.recv(100).startswith(b"VERSION")
                trips.append(time.monotonic() - started)
        counts = proxy.take()["mc"]
        idle_cpu = cpu_seconds([proxy.pid])
        time.sleep(1.0)
        idle_cpu = cpu_seconds([proxy.pid]) - idle_cpu
    # The first trip also waits for the handshake's round trip; then 2 x delay each. Sanity
    # bounds: a timer is never early by more than its learnt lead (< 1 ms), and a busy
    # machine may make it late, never by this much.
    assert trips[0] >= 4 * delay - 0.001
    assert 2 * delay - 0.001 <= statistics.median(trips[1:]) <= 2 * delay + 0.05
    assert len(counts["turns"]) == 11 and len(counts["connections"]) == 1
    assert idle_cpu < 0.2  # a busy loop would use the whole second

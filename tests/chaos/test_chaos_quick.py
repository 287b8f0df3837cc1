"""The chaos run in quick mode, as part of `make test`: the same code as the full run
(`python -m tests.chaos.run --full`, see docs/RELIABILITY.md), every phase but the soak, a
few seconds each, 16 clients. One run for the module; each test asserts one goal.

It needs PostgreSQL's server binaries (it runs a server of its own, to stop it) and
memcached; `TASKLIST_TEST_SKIP_POSTGRES=1` skips it with the other PostgreSQL tests.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.chaos.run import QUICK, run
from tests.support.databases import SKIP_POSTGRES
from tests.support.private_postgres import PostgresUnavailable, server_binaries

pytestmark = pytest.mark.postgres

Results = dict[str, Any]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Results:
    if SKIP_POSTGRES:
        pytest.skip("TASKLIST_TEST_SKIP_POSTGRES=1: PostgreSQL tests skipped on purpose")
    try:
        server_binaries()
    except PostgresUnavailable as error:
        pytest.fail(str(error), pytrace=False)
    out = tmp_path_factory.mktemp("chaos")
    return run(QUICK, out, out / "logs")


def phase(results: Results, name: str) -> Results:
    return next(p for p in results["phases"] if p["phase"] == name)


def found(results: Results, key: str) -> str:
    """What went wrong, per phase, with examples, and where the app's log is."""
    lines = [f"{p['phase']}: {p[key]} {p['statuses']} {p['examples']}"
             for p in results["phases"] if p[key]]
    return "\n".join([*lines, f"app log: {results['app_log']}"])


def test_every_phase_runs_the_whole_mix_and_checks_its_reads(results: Results) -> None:
    assert [p["phase"] for p in results["phases"]] == [
        "steady", "memcached killed", "memcached frozen", "both memcached down",
        "PostgreSQL down", "worker killed", "one worker partitioned",
    ]
    for p in results["phases"]:
        assert {"api", "html", "htmx", "readyz"} <= set(p["mix"]), p["mix"]
        assert p["statuses"].get("201", 0) + p["statuses"].get("303", 0) > 0, p["statuses"]
        # Each page read is an observation of every known task in its range.
        assert p["observations_checked"] > p["requests"], p
    assert results["config"]["clients"] >= 16
    assert results["config"]["seed_tasks"] >= 1500


def test_no_5xx_outside_the_database_down_window(results: Results) -> None:
    assert sum(p["5xx_outside_db_down"] for p in results["phases"]) == 0, \
        found(results, "5xx_outside_db_down")


def test_only_503_while_the_database_is_down(results: Results) -> None:
    down = phase(results, "PostgreSQL down")
    assert down["statuses"].get("503", 0) > 0, down["statuses"]  # it was down
    assert down["5xx_not_503_in_db_down"] == 0, found(results, "5xx_not_503_in_db_down")


def test_the_ledger_is_clean_after_every_phase(results: Results) -> None:
    for p in results["phases"]:
        assert p["ledger"]["violations"] == {}, (p["phase"], p["ledger"])


def test_no_stale_read_no_crossed_session_no_unexpected_answer(results: Results) -> None:
    assert all(p["violations"] == {} for p in results["phases"]), found(results, "violations")


def test_cross_site_writes_are_refused(results: Results) -> None:
    sent = sum(p["cross_site"].get("sent", 0) for p in results["phases"])
    refused = sum(p["cross_site"].get("refused", 0) for p in results["phases"])
    # Only a write in flight on the killed worker may go unanswered; every answer is a 403.
    unanswered = {p["phase"]: p["cross_site"]["unanswered"]
                  for p in results["phases"] if p["cross_site"].get("unanswered")}
    assert set(unanswered) <= {"worker killed"}, unanswered
    assert sent > 0 and refused + sum(unanswered.values()) == sent


def test_the_app_recovers_from_a_database_restart_by_itself(results: Results) -> None:
    events = phase(results, "PostgreSQL down")["events"]
    assert events["app_processes_unchanged"], events
    assert events["first_write_after_restart_s"] is not None, events
    assert events["5xx_after_restart"] == 0, events


def test_a_killed_worker_is_replaced_and_only_its_requests_fail(results: Results) -> None:
    killed = phase(results, "worker killed")
    assert killed["events"]["serving_after_s"] is not None, killed["events"]
    assert len(killed["events"]["workers"]) == 2, killed["events"]
    assert killed["no_answer"] <= results["config"]["clients"], killed["statuses"]
    assert sum(p["no_answer"] for p in results["phases"] if p is not killed) == 0, \
        [p["no_answer_examples"] for p in results["phases"]]


def test_post_stays_bounded(results: Results) -> None:
    goal = next(g for g in results["goals"] if g["text"].startswith("POST / stays bounded"))
    assert goal["met"], goal


def test_a_worker_cut_off_from_memcached_leaves_no_read_staler_than_the_bound(
    results: Results,
) -> None:
    cut = phase(results, "one worker partitioned")
    events = cut["events"]
    assert events["its_memcached_connections_closed"] > 0, events  # the cut was real
    assert events["invalidation_log_empty_s_after_restore"] is not None, events  # pruned
    assert cut["late_reads"]["allowed_s"] == 1.0, cut["late_reads"]
    assert not cut["violations"], found(results, "violations")  # nothing later than that

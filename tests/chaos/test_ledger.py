"""The ledger's checks catch what they are for (no network): a checker that never finds
anything would make the chaos run's zeros worthless."""

from __future__ import annotations

from tests.chaos.ledger import Ledger


def ledger_with_a_rename() -> Ledger:
    """Task 7 created at t=1 (acknowledged at 2), renamed at t=5 (acknowledged at 6)."""
    ledger = Ledger()
    ledger.created(7, owner=1, name="a", sent=1.0, acked=2.0)
    ledger.writing(7, ("b", False), sent=5.0).acked = 6.0
    return ledger


def test_a_read_sent_after_the_acknowledgement_must_see_the_write() -> None:
    ledger = ledger_with_a_rename()
    assert ledger.check_read(7, ("b", False), sent=6.5, done=7.0) is None
    found = ledger.check_read(7, ("a", False), sent=6.5, done=7.0)
    assert found is not None
    kind, detail = found
    assert kind == "stale" and "500 ms before" in detail


def test_a_read_overlapping_the_write_may_see_either_state() -> None:
    ledger = ledger_with_a_rename()
    assert ledger.check_read(7, ("a", False), sent=4.0, done=5.5) is None
    assert ledger.check_read(7, ("b", False), sent=4.0, done=5.5) is None


def test_a_read_cannot_see_a_write_sent_after_it_was_answered() -> None:
    ledger = ledger_with_a_rename()
    found = ledger.check_read(7, ("b", False), sent=3.0, done=4.0)
    assert found is not None and found[0] == "unexpected"
    found = ledger.check_read(7, ("never written", False), sent=8.0, done=9.0)
    assert found is not None and found[0] == "unexpected"


def test_a_write_in_flight_is_visible_before_its_answer() -> None:
    ledger = ledger_with_a_rename()
    ledger.writing(7, None, sent=10.0)  # a delete, not answered yet
    assert ledger.check_read(7, None, sent=10.5, done=11.0) is None
    assert ledger.check_read(7, ("b", False), sent=10.5, done=11.0) is None


def test_an_unknown_task_is_not_checked() -> None:
    assert Ledger().check_read(99, ("x", False), sent=1.0, done=2.0) is None


def test_the_table_check_finds_lost_resurrected_duplicated_and_phantom_rows() -> None:
    ledger = ledger_with_a_rename()
    ledger.created(8, owner=2, name="c", sent=1.0, acked=2.0)
    ledger.writing(8, None, sent=3.0).acked = 4.0  # deleted
    ledger.create_unbound(3, "d", acknowledged=True, answer="POST / (form) 303")  # never found
    ledger.refused_names.add("evil")
    rows = [(8, "c", False), (9, "x", False), (10, "x", False), (11, "evil", False)]
    found = ledger.check_table(rows).violations.counts
    assert found == {"lost": 2, "deleted but present": 1, "duplicated": 1, "phantom": 2,
                     "cross-site write applied": 1}


def test_an_uncertain_write_may_or_may_not_have_been_applied() -> None:
    for stored in ("a", "b"):
        ledger = Ledger()
        ledger.created(7, owner=1, name="a", sent=1.0, acked=2.0)
        ledger.writing(7, ("b", False), sent=5.0).answer = "PATCH /api/tasks/<id> 503"
        report = ledger.check_table([(7, stored, False)])
        assert report.violations.total() == 0
        assert report.uncertain == 1
        assert report.summary()["unacknowledged_applied"] == (
            {"PATCH /api/tasks/<id> 503": 1} if stored == "b" else {})

"""The ledger: every write the clients sent, when, and whether the app acknowledged it; and
the checks of every read and of the table against it.

Each task has one writer (the client that created it), which sends its writes one at a
time, so a task's history is a sequence of versions. A version is in the ledger from the moment
its write is sent; it is acknowledged when a definite success comes back (201, 200, 204,
303), and stays uncertain when no definite answer does (a 5xx, a dropped connection, a
timeout): it may or may not have been applied, and the writer sends nothing more to that
task, so an uncertain version is always the last one. (A create enters the ledger with its
answer, which holds the id; until then no read can be checked against it.)

A read sent at `sent` and answered at `done` may see version j when
- j is no older than the newest version acknowledged before `sent` (else: a stale read), and
- version j was sent before `done` (else: it saw the future, or something never written).
The times are this process's monotonic clock: an acknowledgement is stamped after the
answer arrived and a read's send before it left, so scheduling delays only ever widen what
a read may see, never raise a false alarm.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass, field

# A task as a read sees it: (name, done), or None for no such task (not created yet, or
# deleted).
State = tuple[str, bool] | None
EXAMPLES = 12  # examples kept of each kind of violation
HOT = 4  # the first tasks created (while fewer are hot), until they are deleted


@dataclass
class Version:
    state: State
    sent: float
    acked: float | None  # None: uncertain, it may or may not have been applied
    answer: str = ""  # for an uncertain one: what came back instead of a success


@dataclass(frozen=True)
class Unbound:
    """A create whose task id is not known."""

    owner: int
    acknowledged: bool
    answer: str  # what came back: the 303, or what came instead of a success


@dataclass
class History:
    task_id: int
    owner: int | None  # the writing client; None for a seeded task, which nobody writes
    versions: list[Version]

    def floor(self, before: float) -> int:
        """The index of the newest version acknowledged before `before`."""
        index = 0
        for i, version in enumerate(self.versions):
            if version.acked is not None and version.acked < before:
                index = i
        return index

    def allows(self, state: State, sent: float, done: float, grace: float = 0.0) -> str | None:
        """None if a read sent at `sent`, answered at `done`, may see `state`; otherwise
        `"late"` (it matches a version replaced by one acknowledged less than `grace`
        seconds before the read was sent), `"stale"` (an older version) or `"unexpected"`
        (no version fits)."""
        floor = self.floor(sent)
        for version in self.versions[floor:]:
            if version.state == state and version.sent < done:
                return None
        older = [version.state for version in self.versions[:floor]]
        if state in older[self.floor(sent - grace):]:
            return "late"
        if state in older:
            return "stale"
        return "unexpected"

    @property
    def uncertain(self) -> bool:
        return self.versions[-1].acked is None


@dataclass
class Tally:
    """Counts, and a few examples, of each kind of something (a violation, a dropped
    request)."""

    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, example: str) -> None:
        self.counts[kind] += 1
        kept = self.examples.setdefault(kind, [])
        if len(kept) < EXAMPLES:
            kept.append(example)

    def total(self) -> int:
        return sum(self.counts.values())


class Ledger:
    def __init__(self) -> None:
        self.tasks: dict[int, History] = {}
        self._ids: list[int] = []  # sorted, for the tasks a page's id range covers
        # Creates whose task id is not known, by name: acknowledged by a 303 whose next page
        # did not show it, or uncertain.
        self.unbound: dict[str, Unbound] = {}
        self.refused_names: set[str] = set()  # cross-site creates, refused: never stored
        self.hot: list[int] = []  # a few tasks that many read while their owners write them
        self.reads: Counter[str] = Counter()  # reads checked, by outcome

    # --- writes ------------------------------------------------------------------------

    def seeded(self, task_id: int, name: str, done: bool) -> None:
        self._add(History(task_id, None, [Version((name, done), -math.inf, -math.inf)]))

    def created(self, task_id: int, owner: int, name: str, sent: float, acked: float) -> None:
        """An acknowledged create: before it, the task was not there."""
        before = Version(None, -math.inf, -math.inf)
        self._add(History(task_id, owner, [before, Version((name, False), sent, acked)]))
        if len(self.hot) < HOT:
            self.hot.append(task_id)

    def create_unbound(self, owner: int, name: str, *, acknowledged: bool, answer: str) -> None:
        self.unbound[name] = Unbound(owner, acknowledged, answer)

    def writing(self, task_id: int, state: State, sent: float) -> Version:
        """A write about to be sent: in the ledger while in flight, since a read may see it
        before its answer is back. The writer then sets `acked`, or withdraws it."""
        version = Version(state, sent, None)
        self.tasks[task_id].versions.append(version)
        if state is None and task_id in self.hot:
            self.hot.remove(task_id)
        return version

    def withdraw(self, task_id: int, version: Version) -> None:
        """The write was refused (a 4xx): it never happened."""
        self.tasks[task_id].versions.remove(version)

    def newest_id_before(self, moment: float) -> int:
        """The largest task id whose create was acknowledged before `moment`: a task whose
        create was sent later has a larger id (ids come from a sequence)."""
        for task_id in reversed(self._ids):
            history = self.tasks[task_id]
            created = history.versions[0 if history.owner is None else 1].acked
            if created is not None and created < moment:
                return task_id
        return 0

    def ids_between(self, low: int, high: int) -> list[int]:
        """The known task ids in [low, high)."""
        return self._ids[bisect.bisect_left(self._ids, low):bisect.bisect_left(self._ids, high)]

    def _add(self, history: History) -> None:
        self.tasks[history.task_id] = history
        bisect.insort(self._ids, history.task_id)

    # --- reads -------------------------------------------------------------------------

    def check_read(
        self, task_id: int, state: State, sent: float, done: float, grace: float = 0.0
    ) -> tuple[str, str] | None:
        """Check one observation of a known task (unknown ids are not checkable): None if
        it may be seen, else the kind of violation (or `"late"`, see `History.allows`) and
        what was expected."""
        history = self.tasks.get(task_id)
        if history is None:
            return None
        verdict = history.allows(state, sent, done, grace)
        self.reads[verdict or "ok"] += 1
        if verdict is None:
            return None
        expected = history.versions[history.floor(sent)].state
        return verdict, (
            f"task {task_id}: saw {state!r}, but {expected!r} was acknowledged "
            f"{self.lag(task_id, sent) * 1000:.0f} ms before the read was sent"
        )

    def lag(self, task_id: int, sent: float) -> float:
        """How long before `sent` the version a read sent then must show was acknowledged."""
        history = self.tasks[task_id]
        acked = history.versions[history.floor(sent)].acked
        return sent - acked if acked is not None else math.nan

    # --- the table ---------------------------------------------------------------------

    def check_table(self, rows: list[tuple[int, str, bool]]) -> LedgerReport:
        """Compare the table, read when no request is in flight, with every write."""
        stored = {task_id: (name, done) for task_id, name, done in rows}
        report = LedgerReport(tasks=len(self.tasks), rows=len(rows))
        for task_id, history in self.tasks.items():
            self._check_final(history, stored.get(task_id), report)
        names = Counter(name for _, name, _ in rows)
        for name, count in names.items():
            if count > 1:
                report.violations.add("duplicated", f"{name!r} stored {count} times")
        for task_id, (name, _) in stored.items():
            if name in self.refused_names:
                report.violations.add("cross-site write applied", f"task {task_id} {name!r}")
            elif task_id in self.tasks:
                continue
            elif (create := self.unbound.get(name)) is not None:
                if not create.acknowledged:
                    report.applied.add(create.answer, f"task {task_id} {name!r}")
            else:
                report.violations.add("phantom", f"task {task_id} {name!r} was never written")
        present = set(names)
        for name, create in self.unbound.items():
            if create.acknowledged and name not in present:
                report.violations.add(
                    "lost", f"{name!r} (client {create.owner}): {create.answer}, never stored"
                )
        report.uncertain = sum(h.uncertain for h in self.tasks.values()) + sum(
            not create.acknowledged for create in self.unbound.values()
        )
        return report

    def _check_final(self, history: History, stored: State, report: LedgerReport) -> None:
        verdict = history.allows(stored, math.inf, math.inf)
        if verdict is None:
            last = history.versions[-1]
            if history.uncertain and stored != history.versions[history.floor(math.inf)].state:
                report.applied.add(last.answer, f"task {history.task_id}: {stored!r}")
            return
        expected = history.versions[history.floor(math.inf)].state
        if expected is None:
            kind = "deleted but present"
        elif stored is None:
            kind = "lost"
        else:
            kind = "wrong state"
        report.violations.add(
            kind, f"task {history.task_id} (client {history.owner}): stored {stored!r}, "
            f"last acknowledged {expected!r}"
        )


@dataclass
class LedgerReport:
    tasks: int  # tasks in the ledger (seeded and created)
    rows: int  # rows in the table
    uncertain: int = 0  # writes without a definite answer
    # Of those, the ones applied all the same (allowed), by what was answered instead.
    applied: Tally = field(default_factory=Tally)
    violations: Tally = field(default_factory=Tally)

    @property
    def unacknowledged_applied(self) -> int:
        return self.applied.total()

    def summary(self) -> dict[str, object]:
        return {
            "tasks": self.tasks, "rows": self.rows, "uncertain": self.uncertain,
            "unacknowledged_applied": dict(self.applied.counts),
            "violations": dict(self.violations.counts), "examples": self.violations.examples,
        }

"""Cache counters: what happened, per kind and per server, for the stats page."""

from __future__ import annotations

from typing import TypedDict

METRICS = ("hits", "misses", "sets", "deletes", "errors", "timeouts", "too_large", "unavailable")
INDEX = {metric: i for i, metric in enumerate(METRICS)}
HITS, MISSES, SETS, DELETES, ERRORS, TIMEOUTS, TOO_LARGE, UNAVAILABLE = range(len(METRICS))


class Snapshot(TypedDict):
    """The counts summed: in all, per kind, per server (each a metric -> count dict)."""

    total: dict[str, int]
    kinds: dict[str, dict[str, int]]
    servers: dict[str, dict[str, int]]


class CacheCounters:
    """Monotonic in-process counts of cache outcomes.

    ``errors``/``timeouts`` count failed operations; ``unavailable`` counts operations
    skipped because their server was retrying or dead; ``too_large`` counts values not
    stored because of the item size limit. A failed or skipped read also counts a miss.

    Stored as one list of counts (indexed like `METRICS`) per ``(kind, server)``: the
    hot path increments a list item, and the per-kind and per-server tables are summed
    when asked for.
    """

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], list[int]] = {}

    def row(self, where: tuple[str, str]) -> list[int]:
        """The live counts of ``(kind, server)``, indexed like `METRICS`.

        The same list for the counters' lifetime, so callers may memoize it.
        """
        row = self._rows.get(where)
        if row is None:
            row = self._rows[where] = [0] * len(METRICS)
        return row

    def add(self, metric: str, kind: str, server: str, n: int = 1) -> None:
        self.row((kind, server))[INDEX[metric]] += n

    def snapshot(self) -> Snapshot:
        """``{"total": {...}, "kinds": {ns: {...}}, "servers": {address: {...}}}``."""
        kinds: dict[str, list[int]] = {}
        servers: dict[str, list[int]] = {}
        total = [0] * len(METRICS)
        for (kind, server), row in self._rows.items():
            for sums in (kinds.setdefault(kind, [0] * len(METRICS)),
                         servers.setdefault(server, [0] * len(METRICS)), total):
                for i, n in enumerate(row):
                    sums[i] += n
        return {
            "total": dict(zip(METRICS, total, strict=True)),
            "kinds": _table(kinds),
            "servers": _table(servers),
        }


def _table(rows: dict[str, list[int]]) -> dict[str, dict[str, int]]:
    return {name: dict(zip(METRICS, counts, strict=True)) for name, counts in rows.items()}

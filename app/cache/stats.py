"""Cache counters: what happened, per namespace and per server, for the stats page."""

from __future__ import annotations

from collections import Counter, defaultdict

METRICS = ("hits", "misses", "sets", "deletes", "errors", "timeouts", "too_large", "unavailable")


class CacheCounters:
    """Monotonic in-process counts of cache outcomes.

    ``errors``/``timeouts`` count failed operations; ``unavailable`` counts operations
    skipped because their server was retrying or dead; ``too_large`` counts values not
    stored because of the item size limit. A failed or skipped read also counts a miss.
    """

    def __init__(self) -> None:
        self._namespaces: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._servers: defaultdict[str, Counter[str]] = defaultdict(Counter)

    def add(self, metric: str, namespace: str, server: str, n: int = 1) -> None:
        self._namespaces[namespace][metric] += n
        self._servers[server][metric] += n

    def total(self, metric: str) -> int:
        return sum(counts[metric] for counts in self._namespaces.values())

    def snapshot(self) -> dict[str, dict[str, dict[str, int]] | dict[str, int]]:
        """``{"total": {...}, "namespaces": {ns: {...}}, "servers": {address: {...}}}``."""
        return {
            "total": {metric: self.total(metric) for metric in METRICS},
            "namespaces": _table(self._namespaces),
            "servers": _table(self._servers),
        }

    def reset(self) -> None:
        self._namespaces.clear()
        self._servers.clear()


def _table(rows: dict[str, Counter[str]]) -> dict[str, dict[str, int]]:
    return {name: {metric: counts[metric] for metric in METRICS} for name, counts in rows.items()}

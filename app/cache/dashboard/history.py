"""The cache hit ratio over the last minutes: a small per-process ring buffer of samples.

Each sample holds the cumulative hit and miss counts at one moment; the ratio of an
interval comes from the difference between two consecutive samples, so a busy minute and a
quiet one each show their own ratio rather than the average since the process started.
Every process samples on the same wall-clock boundaries (`HitRatioHistory.until_next`), so
the points of several processes add up per interval (`summed`).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    at: float
    hits: int
    misses: int


@dataclass(frozen=True)
class Point:
    """The hit ratio between two samples; `ratio` is None when there were no lookups."""

    at: float
    ratio: float | None
    lookups: int
    hits: int


class HitRatioHistory:
    """The samples of the last `span` seconds, taken every `interval` seconds."""

    def __init__(
        self, *, interval: float = 5.0, span: float = 600.0, clock: Callable[[], float] = time.time
    ) -> None:
        self.interval = interval
        self.span = span
        self._clock = clock
        self._samples: deque[Sample] = deque(maxlen=int(span // interval) + 1)

    def until_next(self) -> float:
        """Seconds to the next multiple of `interval` on the wall clock: when to sample."""
        return self.interval - self._clock() % self.interval

    def record(self, hits: int, misses: int) -> None:
        """Keep the current totals (the oldest sample drops out once the buffer is full)."""
        if self._samples and (hits < self._samples[-1].hits or misses < self._samples[-1].misses):
            self._samples.clear()  # the counts went back: older deltas would be negative
        self._samples.append(Sample(self._clock(), hits, misses))

    def points(self) -> list[Point]:
        """One point per interval within `span`, oldest first."""
        horizon = self._clock() - self.span
        samples = list(self._samples)
        points = []
        for before, after in zip(samples, samples[1:], strict=False):
            if after.at < horizon:
                continue
            hits, misses = after.hits - before.hits, after.misses - before.misses
            lookups = hits + misses
            points.append(Point(after.at, hits / lookups if lookups else None, lookups, hits))
        return points


def summed(histories: Iterable[Iterable[Point]], interval: float) -> list[Point]:
    """The points of several processes added up per interval, oldest first.

    A point belongs to the interval nearest its time: processes that sample on the same
    boundaries land together even when their clocks disagree by up to half an interval.
    """
    buckets: dict[int, list[int]] = {}
    for points in histories:
        for point in points:
            bucket = buckets.setdefault(round(point.at / interval), [0, 0])
            bucket[0] += point.hits
            bucket[1] += point.lookups
    return [
        Point(n * interval, hits / lookups if lookups else None, lookups, hits)
        for n, (hits, lookups) in sorted(buckets.items())
    ]

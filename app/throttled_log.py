"""A warning logged at most once per interval per subject: a failure that repeats on every
request (a cache server down, the database out of reach) must not flood the log, while the
first one, and one per interval after it, still says what is wrong."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Hashable
from typing import Any

EVERY = 10.0  # seconds between two warnings about the same subject


class ThrottledLog:
    def __init__(
        self,
        logger: logging.Logger,
        every: float = EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.every = every
        self.clock = clock
        self._last: dict[Hashable, float] = {}  # subject -> when it was last logged

    def warning(self, subject: Hashable, message: str, *args: Any) -> bool:
        """Log `message % args` unless `subject` was logged less than `every` ago; True
        if it was logged."""
        now = self.clock()
        if now - self._last.get(subject, -math.inf) < self.every:
            return False
        self._last[subject] = now
        self.logger.warning(message, *args)
        return True

"""Many deadlines, one timer: each item expires at its own deadline, never after discard.
(Orders are asserted, not durations: the machines are shared.)"""

import asyncio

from app.cache.backends.deadlines import Deadlines


class Recorder:
    def __init__(self, until: int) -> None:
        self.expired: list[str] = []
        self.until = until
        self.done = asyncio.Event()

    def __call__(self, item: str) -> None:
        self.expired.append(item)
        if len(self.expired) == self.until:
            self.done.set()


async def test_an_earlier_deadline_expires_first_though_added_later() -> None:
    # Without re-arming for it, both would expire in one go at the later deadline, in the
    # order they were added.
    record = Recorder(until=2)
    deadlines = Deadlines(record)
    deadlines.add("slow", 0.3)
    deadlines.add("fast", 0.05)
    await asyncio.wait_for(record.done.wait(), 5)
    assert record.expired == ["fast", "slow"]


async def test_a_discarded_item_never_expires() -> None:
    record = Recorder(until=1)
    deadlines = Deadlines(record)
    deadlines.add("done in time", 0.01)
    deadlines.add("late", 0.05)
    deadlines.discard("done in time")
    await asyncio.wait_for(record.done.wait(), 5)
    await asyncio.sleep(0.05)
    assert record.expired == ["late"]
    deadlines.discard("late")  # already expired: nothing happens


async def test_add_returns_the_deadline_on_the_loops_clock() -> None:
    deadlines: Deadlines[str] = Deadlines(lambda item: None)
    before = asyncio.get_running_loop().time()
    deadline = deadlines.add("x", 1.0)
    assert before + 1.0 <= deadline <= asyncio.get_running_loop().time() + 1.0

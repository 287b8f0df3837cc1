"""Many deadlines, one timer: each item expires at its own deadline, never after discard."""

import asyncio

from app.cache.backends.deadlines import Deadlines


async def test_each_item_expires_at_its_own_deadline_in_order():
    expired: list[str] = []
    deadlines = Deadlines(expired.append)
    deadlines.add("slow", 0.3)
    deadlines.add("fast", 0.05)  # earlier than the armed timer: re-arms it
    await asyncio.sleep(0.15)
    assert expired == ["fast"]
    await asyncio.sleep(0.3)
    assert expired == ["fast", "slow"]


async def test_a_discarded_item_never_expires():
    expired: list[str] = []
    deadlines = Deadlines(expired.append)
    deadlines.add("done in time", 0.05)
    deadlines.add("late", 0.1)
    deadlines.discard("done in time")
    await asyncio.sleep(0.2)
    assert expired == ["late"]
    deadlines.discard("late")  # already expired: nothing happens


async def test_add_returns_the_deadline_on_the_loops_clock():
    deadlines = Deadlines(lambda item: None)
    before = asyncio.get_running_loop().time()
    deadline = deadlines.add("x", 1.0)
    assert before + 1.0 <= deadline <= asyncio.get_running_loop().time() + 1.0

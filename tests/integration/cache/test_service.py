"""The cache-aside service: generations, memoize and stampede control, on both backends."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from app.cache import CacheClient
from app.cache.generations import Generations
from app.cache.service import CacheService, Leases
from tests.support.clock import Clock


class SpyClient:
    """The real client, counting the round trips the service makes through it."""

    def __init__(self, cache_client: CacheClient) -> None:
        self._client = cache_client
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name in {"get", "get_many", "set", "add", "delete"}:

            async def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls.append(name)
                return await attribute(*args, **kwargs)

            return counted
        return attribute


def named[F: Callable[..., Any]](name: str, function: F) -> F:
    """`function` under the qualified name `name`: two functions memoized under one name
    stand for one function in two processes (they share entries)."""
    function.__qualname__ = name
    return function


@pytest.fixture
def service(cache_client: CacheClient) -> CacheService:
    return CacheService(cache_client)


# --- generations -------------------------------------------------------------------------


async def test_a_lost_generation_never_resurrects_old_entries(service: CacheService) -> None:
    generations = service.generations
    first = (await generations.current(["tasks"]))["tasks"]
    data_key = service.keys.key("memoize", "list", first)
    await service.client.set(data_key, ["old"], 60)

    await service.client.delete(generations.key("tasks"))  # eviction, flush or restart
    second = (await generations.current(["tasks"]))["tasks"]

    assert second != first
    assert await service.client.get(service.keys.key("memoize", "list", second)) is None


async def test_tokens_are_random_not_counters(service: CacheService) -> None:
    seen = set()
    for _ in range(20):
        await service.client.delete(service.generations.key("tasks"))
        seen.add((await service.generations.current(["tasks"]))["tasks"])
    assert len(seen) == 20
    assert not seen & {"0", "1"}


async def test_concurrent_first_reads_agree_on_one_token(service: CacheService) -> None:
    results = await asyncio.gather(*(service.generations.current(["fresh"]) for _ in range(50)))
    assert len({result["fresh"] for result in results}) == 1


async def test_bump_changes_only_the_named_topics(service: CacheService) -> None:
    before = await service.generations.current(["a", "b"])
    await service.bump("a")
    after = await service.generations.current(["a", "b"])
    assert after["a"] != before["a"]
    assert after["b"] == before["b"]


async def test_several_tokens_are_read_in_one_round_trip(cache_client: CacheClient) -> None:
    spy = SpyClient(cache_client)
    generations = Generations(spy)  # type: ignore[arg-type]  # a spy in the client's place
    await generations.current(["a", "b", "c"])  # creates them
    spy.calls.clear()
    await generations.current(["a", "b", "c"])
    assert spy.calls == ["get_many"]


async def test_flush_then_read_is_a_miss_never_old_data(
    service: CacheService, empty_cache: Callable[[], Awaitable[None]]
) -> None:
    calls = 0

    async def load() -> int:
        nonlocal calls
        calls += 1
        return calls

    memoized = service.memoize(60, topics=["tasks"])(load)
    assert await memoized() == 1
    await empty_cache()
    assert await memoized() == 2


async def test_interleaved_reader_and_writer_never_leave_stale_data(
    service: CacheService,
) -> None:
    """Reader reads the generation and the database; the writer commits and bumps; the
    reader stores. The next read must return the new data (the stale-set race)."""
    database = {"value": "old"}
    reader_has_read = asyncio.Event()
    writer_has_bumped = asyncio.Event()

    async def slow_load() -> str:
        value = database["value"]
        reader_has_read.set()
        await writer_has_bumped.wait()  # the reader stores only after the writer is done
        return value

    async def load() -> str:
        return database["value"]

    racing = service.memoize(60, topics=["tasks"])(named("list", slow_load))
    normal = service.memoize(60, topics=["tasks"])(named("list", load))

    reader = asyncio.create_task(racing())
    await reader_has_read.wait()
    database["value"] = "new"  # the writer commits...
    await service.bump("tasks")  # ...then bumps
    writer_has_bumped.set()
    assert await reader == "old"  # the racing reader saw the old row, and stored it

    assert await normal() == "new"


# --- memoize -----------------------------------------------------------------------------


async def test_positional_and_keyword_calls_share_an_entry(service: CacheService) -> None:
    calls: list[tuple[int, int]] = []

    async def add(a: int, b: int = 2) -> int:
        calls.append((a, b))
        return a + b

    memoized = service.memoize(60)(add)
    assert await memoized(1, b=2) == 3
    assert await memoized(a=1, b=2) == 3
    assert await memoized(1) == 3
    assert calls == [(1, 2)]
    assert await memoized(2) == 4
    assert calls == [(1, 2), (2, 2)]


async def test_self_is_not_in_the_key(service: CacheService) -> None:
    calls = 0

    class Repository:
        async def find(self, name: str) -> str:
            nonlocal calls
            calls += 1
            return name.upper()

    first, second = Repository(), Repository()
    find = service.memoize(60)(Repository.find)
    assert await find(first, "x") == "X"
    assert await find(second, "x") == "X"
    assert calls == 1


async def test_none_is_cached_and_a_hit_costs_two_round_trips(cache_client: CacheClient) -> None:
    spy = SpyClient(cache_client)
    service = CacheService(spy)  # type: ignore[arg-type]  # a spy in the client's place
    calls = 0

    async def missing(task_id: int) -> None:
        nonlocal calls
        calls += 1
        return None

    memoized = service.memoize(60, topics=["task-{task_id}"])(missing)
    assert await memoized(7) is None
    spy.calls.clear()
    assert await memoized(7) is None
    assert calls == 1
    assert spy.calls == ["get_many", "get"]


async def test_topics_may_name_arguments(service: CacheService) -> None:
    calls: list[int] = []

    async def task(task_id: int) -> int:
        calls.append(task_id)
        return task_id

    memoized = service.memoize(60, topics=["task-{task_id}"])(task)
    await memoized(1)
    await memoized(2)
    await service.bump("task-1")
    await memoized(1)
    await memoized(2)
    assert calls == [1, 2, 1]


# --- stampede ----------------------------------------------------------------------------


async def test_concurrent_misses_load_once(service: CacheService) -> None:
    calls = 0
    release = asyncio.Event()

    async def slow() -> str:
        nonlocal calls
        calls += 1
        await release.wait()
        return "value"

    memoized = service.memoize(60)(slow)
    readers = [asyncio.create_task(memoized()) for _ in range(100)]
    await asyncio.sleep(0.05)
    release.set()
    assert await asyncio.gather(*readers) == ["value"] * 100
    assert calls == 1


async def test_cancelling_one_waiter_does_not_cancel_the_load(service: CacheService) -> None:
    release = asyncio.Event()

    async def slow() -> str:
        await release.wait()
        return "value"

    memoized = service.memoize(60)(slow)
    first = asyncio.create_task(memoized())
    second = asyncio.create_task(memoized())
    await asyncio.sleep(0.05)
    first.cancel()
    release.set()
    assert await second == "value"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_past_the_soft_ttl_all_get_stale_and_one_refresh_runs(
    cache_client: CacheClient
) -> None:
    clock = Clock()  # the envelope's soft expiry and the service read the same clock
    timed = CacheClient(cache_client.backend, keys=cache_client.keys, clock=clock)
    service = CacheService(timed, clock=clock)
    version = 0
    refreshing = asyncio.Event()
    release = asyncio.Event()

    async def load() -> int:
        nonlocal version
        version += 1
        if version > 1:
            refreshing.set()
            await release.wait()
        return version

    memoized = service.memoize(600, soft_timeout=10)(load)
    assert await memoized() == 1
    clock.now += 11  # past the soft TTL, well within the hard one

    results = await asyncio.gather(*(memoized() for _ in range(100)))
    assert results == [1] * 100  # everybody got the stale value at once
    await asyncio.wait_for(refreshing.wait(), 1)
    release.set()
    for _ in range(100):
        if await memoized() == 2:
            break
        await asyncio.sleep(0.01)
    assert await memoized() == 2
    assert version == 2  # exactly one refresh


async def test_a_lease_holder_in_another_process_makes_us_wait_for_its_value(
    cache_client: CacheClient,
) -> None:
    """Two services on one cache stand for two processes."""
    other = CacheService(cache_client)
    ours = CacheService(cache_client, leases=Leases(ttl=5, wait=2.0, poll=0.01))
    loads: list[str] = []
    other_started = asyncio.Event()
    release = asyncio.Event()

    async def slow_other() -> str:
        loads.append("other")
        other_started.set()
        await release.wait()
        return "from other"

    async def ours_load() -> str:
        loads.append("ours")
        return "from ours"

    theirs = asyncio.create_task(other.memoize(60)(named("shared", slow_other))())
    await other_started.wait()
    mine = asyncio.create_task(ours.memoize(60)(named("shared", ours_load))())
    await asyncio.sleep(0.05)
    release.set()
    assert await mine == "from other"
    assert await theirs == "from other"
    assert loads == ["other"]


async def test_a_crashed_lease_holder_blocks_nobody_past_the_wait(
    cache_client: CacheClient
) -> None:
    ours = CacheService(cache_client, leases=Leases(ttl=1, wait=0.2, poll=0.01))
    memoized = ours.memoize(60)(_answer)
    key = await memoized.make_cache_key()
    # A lease taken by a process that then died: nobody will ever fill the key.
    assert await cache_client.add(ours.keys.key("lease", key), "dead-process", 1)
    assert await asyncio.wait_for(memoized(), 2) == 42


async def _answer() -> int:
    return 42

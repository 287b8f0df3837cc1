"""The directory of app processes (`app.cache.dashboard.peers`) against real memcached processes.

Each publisher has its own client and backend (its own connections and failover state), as
each app process has.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable

from app.cache import CacheBackend, CacheClient, KeyBuilder, MemoryBackend
from app.cache.backends.null import NullBackend
from app.cache.dashboard.peers import SLOTS, Peers
from app.cache.keys import KeyKinds
from tests.integration.cache.support import MakeBackend, value_of
from tests.support.memcached import MemcachedProcess

KEYS = KeyBuilder("test")
SLOT_KEYS = [KEYS.key(KeyKinds.PEERS, "slot", n) for n in range(SLOTS)]
INTERVAL = 0.2  # the shortest TTL: 2 s


def publisher(backend: CacheBackend, name: str) -> Peers:
    return Peers(CacheClient(backend, keys=KEYS), lambda: {"name": name}, interval=INTERVAL)


async def directory(backend: CacheBackend) -> list[str]:
    """The process id in each occupied slot, read raw."""
    found = await CacheClient(backend, keys=KEYS).get_many(SLOT_KEYS)
    return [found[key].value["id"] for key in SLOT_KEYS if key in found]


async def eventually[T](
    check: Callable[[], Awaitable[T]], within: float, step: float = 0.1
) -> T:
    deadline = time.monotonic() + within
    while not (result := await check()):
        assert time.monotonic() < deadline, f"not within {within} s"
        await asyncio.sleep(step)
    return result


async def test_two_processes_read_the_same_directory(
    memcached: MemcachedProcess, make_backend: MakeBackend
) -> None:
    a = publisher(make_backend([memcached.address]), "a")
    b = publisher(make_backend([memcached.address]), "b")
    assert await a.publish() and await b.publish()
    seen_by_a, seen_by_b = await a.census(), await b.census()
    assert [p.id for p in seen_by_a.peers] == [p.id for p in seen_by_b.peers] == [a.id, b.id]
    assert [p.data for p in seen_by_b.peers] == [{"name": "a"}, {"name": "b"}]
    assert seen_by_a.complete and seen_by_b.complete
    assert a.ttl == 2 and publisher(make_backend([memcached.address]), "c").id != a.id


async def test_processes_publishing_at_once_each_get_a_slot_of_their_own(
    memcached: MemcachedProcess, make_backend: MakeBackend
) -> None:
    processes = [publisher(make_backend([memcached.address]), str(n)) for n in range(12)]
    for _ in range(3):  # claims, then rewrites, all concurrently
        assert all(await asyncio.gather(*(p.publish() for p in processes)))
    slots = await directory(make_backend([memcached.address]))
    assert sorted(slots) == sorted(p.id for p in processes), "one slot each, none shared"
    census = await processes[5].census()
    assert {p.id for p in census.peers} == {p.id for p in processes}


async def test_a_process_that_stops_publishing_drops_out_within_its_ttl(
    memcached: MemcachedProcess, make_backend: MakeBackend
) -> None:
    a = publisher(make_backend([memcached.address]), "a")
    dead = publisher(make_backend([memcached.address]), "dead")
    running = asyncio.create_task(a.run())
    try:
        assert await dead.publish()  # and never again, like a killed process
        started = time.monotonic()
        assert dead.id in {p.id for p in (await a.census()).peers}

        async def gone() -> bool:
            return [p.id for p in (await a.census()).peers] == [a.id]

        await eventually(gone, within=dead.ttl + 1.5)
        assert time.monotonic() - started > 0.9, "memcached keeps it at least ttl - 1 s"
    finally:
        running.cancel()


async def test_a_withdrawn_process_drops_out_at_once(
    memcached: MemcachedProcess, make_backend: MakeBackend
) -> None:
    a = publisher(make_backend([memcached.address]), "a")
    b = publisher(make_backend([memcached.address]), "b")
    assert await a.publish() and await b.publish()
    await b.withdraw()
    assert [p.id for p in (await a.census()).peers] == [a.id]
    assert await directory(make_backend([memcached.address])) == [a.id]


async def test_a_process_whose_slot_was_taken_moves_to_another(
    memcached: MemcachedProcess, make_backend: MakeBackend
) -> None:
    a = publisher(make_backend([memcached.address]), "a")
    b = publisher(make_backend([memcached.address]), "b")
    assert await a.publish()
    memcached.flush()  # a's entry is gone (as after a stall past its TTL)...
    assert await b.publish()  # ...and b takes the free slot
    assert await directory(make_backend([memcached.address])) == [b.id]
    assert await a.publish()
    assert await directory(make_backend([memcached.address])) == [b.id, a.id]
    assert await b.publish() and await a.publish()  # both stay where they are now
    assert await directory(make_backend([memcached.address])) == [b.id, a.id]


async def test_a_process_found_in_two_slots_counts_once_with_its_newest_entry(
    memcached: MemcachedProcess, make_backend: MakeBackend
) -> None:
    cache_client = CacheClient(make_backend([memcached.address]), keys=KEYS)
    counts = {"n": 1}
    a = Peers(cache_client, lambda: dict(counts), interval=INTERVAL)
    assert await a.publish()
    old = await value_of(cache_client, SLOT_KEYS[0])
    assert await cache_client.set(SLOT_KEYS[7], old, 60)  # left behind by an earlier slot
    counts["n"] = 2
    (peer,) = (await a.census()).peers
    assert peer.id == a.id and peer.data == {"n": 2}


async def test_entries_on_a_dead_server_move_to_a_live_one(
    memcached_factory: Callable[..., MemcachedProcess], make_backend: MakeBackend
) -> None:
    servers = [memcached_factory(), memcached_factory()]
    addresses = [s.address for s in servers]
    processes = [publisher(make_backend(addresses), str(n)) for n in range(8)]
    for p in processes:
        assert await p.publish()
    ring = make_backend(addresses)
    owners = {ring.server_for(key) for key in SLOT_KEYS[: len(processes)]}
    assert owners == set(addresses), "the first slots are on both servers"
    victim = servers[0]
    victim.kill()

    for p in processes:  # one publish each: those whose slot was on the victim move
        assert await p.publish()
    census = await processes[0].census()
    assert {p.id for p in census.peers} == {p.id for p in processes}
    assert not census.complete, "the victim's slots could not be read"

    victim.start()  # empty; readable again once each client probes it

    async def complete() -> bool:
        for p in processes:
            await p.publish()
        return (await processes[0].census()).complete

    await eventually(complete, within=3)
    assert sorted(await directory(ring)) == sorted(p.id for p in processes), "no duplicates"


async def test_with_memcached_down_a_process_sees_itself_only(
    memcached: MemcachedProcess, make_backend: MakeBackend
) -> None:
    a = publisher(make_backend([memcached.address]), "a")
    assert await a.publish()
    memcached.kill()
    assert not await a.publish()
    census = await a.census()
    assert [(p.id, p.data) for p in census.peers] == [(a.id, {"name": "a"})]
    assert not census.complete


async def test_foreign_values_in_the_slots_are_skipped(
    memcached: MemcachedProcess, make_backend: MakeBackend
) -> None:
    cache_client = CacheClient(make_backend([memcached.address]), keys=KEYS)
    assert await cache_client.set(SLOT_KEYS[0], "junk", 60)
    assert await cache_client.set(SLOT_KEYS[1], {"id": "other-release", "seq": 1}, 60)
    a = publisher(make_backend([memcached.address]), "a")
    assert await a.publish()
    census = await a.census()
    assert [p.id for p in census.peers] == [a.id] and census.complete
    found = await cache_client.get_many(SLOT_KEYS[:3])
    assert found[SLOT_KEYS[2]].value["id"] == a.id, "taken slots are left alone"


async def test_with_every_slot_taken_a_process_still_sees_itself(
    memcached: MemcachedProcess, make_backend: MakeBackend
) -> None:
    processes = [
        Peers(CacheClient(make_backend([memcached.address]), keys=KEYS), lambda: {}, interval=1,
              slots=2)
        for _ in range(3)
    ]
    assert [await p.publish() for p in processes] == [True, True, False]
    assert [p.id for p in (await processes[2].census()).peers] == [p.id for p in processes]
    assert [p.id for p in (await processes[0].census()).peers] == [p.id for p in processes[:2]]


async def test_the_in_process_cache_and_no_cache_show_this_process(
    make_backend: MakeBackend
) -> None:
    for backend in (MemoryBackend(), NullBackend()):
        a = publisher(backend, "a")
        census = await a.census()
        assert [(p.id, p.data) for p in census.peers] == [(a.id, {"name": "a"})]
        assert census.complete

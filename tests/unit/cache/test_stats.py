import json

from app.cache.stats import METRICS, CacheCounters


def test_counts_per_kind_and_server() -> None:
    counters = CacheCounters()
    counters.add("hits", "tasks", "a:1")
    counters.add("hits", "tasks", "b:1", 2)
    counters.add("misses", "views", "a:1")
    snap = counters.snapshot()
    assert json.loads(json.dumps(snap)) == snap
    assert snap["total"]["hits"] == 3 and snap["total"]["misses"] == 1
    assert snap["kinds"]["tasks"]["hits"] == 3
    assert snap["servers"]["a:1"] == {**dict.fromkeys(METRICS, 0), "hits": 1, "misses": 1}


def test_a_row_is_the_same_live_list_so_callers_may_memoize_it() -> None:
    counters = CacheCounters()
    row = counters.row(("tasks", "a:1"))
    row[METRICS.index("hits")] += 2
    assert counters.snapshot()["total"]["hits"] == 2
    row[METRICS.index("hits")] += 1
    assert counters.row(("tasks", "a:1")) is row
    assert counters.snapshot()["kinds"]["tasks"]["hits"] == 3

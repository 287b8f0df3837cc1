import json

from app.cache.stats import METRICS, CacheCounters


def test_counts_per_namespace_and_server():
    counters = CacheCounters()
    counters.add("hits", "tasks", "a:1")
    counters.add("hits", "tasks", "b:1", 2)
    counters.add("misses", "views", "a:1")
    snap = counters.snapshot()
    assert json.loads(json.dumps(snap)) == snap
    assert snap["total"]["hits"] == 3 and snap["total"]["misses"] == 1
    assert snap["namespaces"]["tasks"]["hits"] == 3
    assert snap["servers"]["a:1"] == {**dict.fromkeys(METRICS, 0), "hits": 1, "misses": 1}
    counters.reset()
    assert counters.snapshot()["total"]["hits"] == 0


def test_reset_zeroes_rows_in_place_so_memoised_rows_stay_live():
    counters = CacheCounters()
    row = counters.row(("tasks", "a:1"))
    row[METRICS.index("hits")] += 2
    counters.reset()
    assert counters.snapshot()["total"]["hits"] == 0
    row[METRICS.index("hits")] += 1
    assert counters.row(("tasks", "a:1")) is row
    assert counters.snapshot()["namespaces"]["tasks"]["hits"] == 1

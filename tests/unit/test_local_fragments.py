"""The fragments a process keeps in memory: exact by key, template and version; bounded."""

from app.webcache.fragments import LocalFragments


def test_a_copy_serves_only_its_template_and_version() -> None:
    local = LocalFragments(1000)
    local.put("k", "digest-1", "v1", "<p>one</p>", "mc1")
    assert local.get("k", "digest-1", "v1") == ("<p>one</p>", "mc1")
    assert local.get("k", "digest-1", "v2") is None  # the item changed
    assert local.get("k", "digest-2", "v1") is None  # the template changed
    local.put("k", "digest-1", "v2", "<p>two</p>", "mc1")
    assert local.get("k", "digest-1", "v1") is None and local.size == len("<p>two</p>")
    local.discard("k")
    assert local.get("k", "digest-1", "v2") is None and local.size == 0


def test_the_least_recently_used_go_first_past_the_limit() -> None:
    local = LocalFragments(30)
    for name in ("a", "b", "c"):
        local.put(name, "d", "v", name * 10, "mc")
    assert local.get("a", "d", "v") == ("a" * 10, "mc")  # now the most recent
    local.put("e", "d", "v", "e" * 10, "mc")
    assert local.get("b", "d", "v") is None
    assert [local.get(n, "d", "v") is not None for n in "ace"] == [True, True, True]
    local.put("huge", "d", "v", "x" * 31, "mc")  # larger than the whole store: not kept
    assert local.get("huge", "d", "v") is None and local.size == 30

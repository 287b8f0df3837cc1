"""Fragment caching in Quart's async Jinja, on the in-process cache and a real memcached."""

from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any

import pytest
from jinja2 import DictLoader
from quart import Quart, render_template

from app.cache import CacheClient, KeyBuilder
from app.webcache.fragments import (
    DEFAULT_TIMEOUT,
    FragmentCache,
    FragmentCacheMisuse,
    init_fragment_cache,
)
from tests.integration.cache.support import MakeBackend
from tests.support.memcached import MemcachedProcess


@dataclass(frozen=True)
class Item:
    id: int
    name: str
    version: int = 1


class Spy:
    """Records the calls made to a real client (the client still does the work)."""

    def __init__(self, cache_client: CacheClient, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: defaultdict[str, list[tuple[Any, ...]]] = defaultdict(list)
        for method in ("get", "get_many", "set", "delete"):
            real = getattr(cache_client, method)

            async def wrapper(*args: Any, _real: Any = real, _method: str = method,
                              **kwargs: Any) -> Any:
                self.calls[_method].append(args)
                return await _real(*args, **kwargs)

            monkeypatch.setattr(cache_client, method, wrapper)

    def count(self, method: str) -> int:
        return len(self.calls[method])

    def reset(self) -> None:
        self.calls.clear()


class Site:
    """A tiny Quart app whose templates live in an editable dict."""

    def __init__(
        self, cache_client: CacheClient | None, templates: dict[str, str], release: str = ""
    ) -> None:
        self.templates = templates
        self.app = Quart(__name__)
        self.app.config.update(TEMPLATES_AUTO_RELOAD=True, SECRET_KEY="test")
        self.app.jinja_loader = DictLoader(templates)
        fragments = None if cache_client is None else FragmentCache(cache_client, release=release)
        init_fragment_cache(self.app.jinja_env, fragments)

    async def render(self, template: str, /, **context: Any) -> str:
        async with self.app.test_request_context("/"):
            return await render_template(template, **context)


def fragment_counts(cache_client: CacheClient) -> dict[str, int]:
    return cache_client.counters.snapshot()["kinds"].get("fragment", defaultdict(int))


@pytest.fixture
def spy(cache_client: CacheClient, monkeypatch: pytest.MonkeyPatch) -> Spy:
    return Spy(cache_client, monkeypatch)


ROW = "<li>{{ task.name }}</li>"
LIST = "<ul>{{ cached_rows('row.html', items, as_='task') }}</ul>"


def items(n: int) -> list[Item]:
    return [Item(i, f"task {i}") for i in range(1, n + 1)]


async def test_block_is_rendered_once_then_served_from_the_cache(cache_client: CacheClient) -> None:
    site = Site(cache_client, {"box.html": "{% cache 60, 'box' %}<b>{{ value }}</b>{% endcache %}"})

    assert await site.render("box.html", value=1) == "<b>1</b>"
    assert await site.render("box.html", value=2) == "<b>1</b>"

    counts = fragment_counts(cache_client)
    assert (counts["misses"], counts["hits"], counts["sets"]) == (1, 1, 1)


async def test_none_timeout_stores_with_the_finite_default_ttl(
    cache_client: CacheClient, spy: Spy
) -> None:
    site = Site(cache_client, {"box.html": "{% cache None, 'box' %}{{ value }}{% endcache %}"})

    assert await site.render("box.html", value=1) == "1"
    assert await site.render("box.html", value=2) == "1"

    [(key, _value, ttl)] = spy.calls["set"]
    assert ttl == DEFAULT_TIMEOUT
    assert key == FragmentCache(cache_client).make_template_fragment_key("box")


async def test_del_deletes_the_entry_and_renders_fresh(cache_client: CacheClient, spy: Spy) -> None:
    site = Site(cache_client, {
        "box.html": "{% cache 60, 'box' %}{{ value }}{% endcache %}",
        "drop.html": "{% cache 'del', 'box' %}{{ value }}{% endcache %}",
    })
    assert await site.render("box.html", value=1) == "1"

    assert await site.render("drop.html", value=2) == "2"
    assert spy.count("delete") == 1
    assert spy.count("set") == 1  # 'del' does not store

    assert await site.render("box.html", value=3) == "3"


async def test_edited_template_does_not_serve_its_old_fragment(
    cache_client: CacheClient, spy: Spy
) -> None:
    site = Site(cache_client, {"box.html": "{% cache 60, 'box' %}<b>{{ value }}</b>{% endcache %}"})
    assert await site.render("box.html", value=1) == "<b>1</b>"

    site.templates["box.html"] = "{% cache 60, 'box' %}<i>{{ value }}</i>{% endcache %}"
    assert await site.render("box.html", value=2) == "<i>2</i>"
    assert await site.render("box.html", value=3) == "<i>2</i>"

    first, second = (call[0] for call in spy.calls["set"])
    assert first == second  # the fresh rendering overwrote the same key
    counts = fragment_counts(cache_client)
    assert (counts["misses"], counts["hits"]) == (2, 1)


async def test_a_new_release_does_not_serve_the_old_releases_fragments(
    cache_client: CacheClient, spy: Spy
) -> None:
    """What a block includes is not in its digest; the release covers it after a deploy."""
    templates = {
        "box.html": "{% cache 60, 'box' %}{% include 'inner.html' %}{% endcache %}",
        "inner.html": "<b>{{ value }}</b>",
    }
    old = Site(cache_client, templates, release="r1")
    assert await old.render("box.html", value=1) == "<b>1</b>"

    new = Site(cache_client, {**templates, "inner.html": "<i>{{ value }}</i>"}, release="r2")
    assert await new.render("box.html", value=2) == "<i>2</i>"
    assert await new.render("box.html", value=3) == "<i>2</i>"
    first, second = (call[0] for call in spy.calls["set"])
    assert first == second  # the new release's rendering replaced the old one in place


async def test_fragment_key_deletes_exactly_that_fragment(cache_client: CacheClient) -> None:
    site = Site(cache_client, {"row.html": "{% cache None, 'task', id %}{{ name }}{% endcache %}"})
    assert await site.render("row.html", id=1, name="a") == "a"
    assert await site.render("row.html", id=2, name="b") == "b"

    key = FragmentCache(cache_client).make_template_fragment_key("task", vary_on=["1"])
    assert await cache_client.delete(key) is True

    assert await site.render("row.html", id=1, name="A") == "A"
    assert await site.render("row.html", id=2, name="B") == "b"


async def test_fifty_rows_cost_one_get_many(cache_client: CacheClient, spy: Spy) -> None:
    site = Site(cache_client, {"list.html": LIST, "row.html": ROW})
    rows = items(50)

    first = await site.render("list.html", items=rows)
    assert (spy.count("get_many"), spy.count("get"), spy.count("set")) == (1, 0, 50)
    assert len(spy.calls["get_many"][0][0]) == 50

    spy.reset()
    assert await site.render("list.html", items=rows) == first  # from this process's memory
    assert (spy.count("get_many"), spy.count("get"), spy.count("set")) == (0, 0, 0)
    assert fragment_counts(cache_client)["hits"] == 50
    another_process = Site(cache_client, {"list.html": LIST, "row.html": ROW})
    assert await another_process.render("list.html", items=rows) == first
    assert (spy.count("get_many"), spy.count("get"), spy.count("set")) == (1, 0, 0)
    assert len(spy.calls["get_many"][0][0]) == 50
    assert fragment_counts(cache_client)["hits"] == 100
    assert first == "<ul>" + "".join(f"<li>task {i}</li>" for i in range(1, 51)) + "</ul>"


async def test_changed_item_rerenders_only_its_row(cache_client: CacheClient, spy: Spy) -> None:
    site = Site(cache_client, {"list.html": LIST, "row.html": ROW})
    rows = items(5)
    await site.render("list.html", items=rows)
    spy.reset()

    rows[2] = replace(rows[2], name="renamed", version=2)
    rows[0] = replace(rows[0], name="same version")  # a cached row is not re-rendered
    html = await site.render("list.html", items=rows)

    assert "<li>renamed</li>" in html
    assert "<li>task 1</li>" in html and "same version" not in html
    assert spy.count("set") == 1
    assert fragment_counts(cache_client)["misses"] == 5 + 1


async def test_deleted_row_key_rerenders_only_that_row(cache_client: CacheClient, spy: Spy) -> None:
    site = Site(cache_client, {"list.html": LIST, "row.html": ROW})
    rows = items(3)
    await site.render("list.html", items=rows)
    spy.reset()

    fragments = FragmentCache(cache_client)
    await cache_client.delete(fragments.make_template_fragment_key("row.html", [2]))
    rows = [replace(row, name=f"new {row.id}") for row in rows]
    another_process = Site(cache_client, {"list.html": LIST, "row.html": ROW})
    html = await another_process.render("list.html", items=rows)

    assert html == "<ul><li>task 1</li><li>new 2</li><li>task 3</li></ul>"
    assert spy.count("set") == 1


async def test_removed_item_renders_nothing_new(cache_client: CacheClient, spy: Spy) -> None:
    site = Site(cache_client, {"list.html": LIST, "row.html": ROW})
    rows = items(4)
    await site.render("list.html", items=rows)
    spy.reset()

    html = await site.render("list.html", items=[row for row in rows if row.id != 3])

    assert html == "<ul><li>task 1</li><li>task 2</li><li>task 4</li></ul>"
    assert spy.count("set") == 0


async def test_outer_block_rebuild_reuses_inner_rows(cache_client: CacheClient, spy: Spy) -> None:
    site = Site(cache_client, {
        "page.html": "{% cache None, 'list', generation %}<ul>"
                     "{{ cached_rows('row.html', items, as_='task') }}</ul>{% endcache %}",
        "row.html": ROW,
    })
    rows = items(10)
    await site.render("page.html", items=rows, generation=1)
    spy.reset()

    assert await site.render("page.html", items=rows, generation=1) == (
        "<ul>" + "".join(f"<li>task {i}</li>" for i in range(1, 11)) + "</ul>"
    )
    assert (spy.count("get_many"), spy.count("set")) == (1, 0)  # only the outer block read

    spy.reset()
    rows[4] = replace(rows[4], name="changed", version=2)
    html = await site.render("page.html", items=rows, generation=2)
    assert "<li>changed</li>" in html
    assert spy.count("get_many") == 2  # outer block, then all rows at once
    assert spy.count("set") == 2  # outer block and the one changed row


async def test_autoescape_applies_on_miss_and_hit(cache_client: CacheClient) -> None:
    site = Site(cache_client, {
        "box.html": "{% cache 60, 'box' %}<b>{{ value }}</b>{% endcache %}",
        "list.html": LIST,
        "row.html": ROW,
    })
    script = "<script>alert(1)</script>"
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"

    for _ in range(2):
        assert await site.render("box.html", value=script) == f"<b>{escaped}</b>"
        assert await site.render("list.html", items=[Item(1, script)]) == (
            f"<ul><li>{escaped}</li></ul>"
        )
    assert fragment_counts(cache_client)["hits"] == 2


FLASHES = "{% cache 60, 'flashes' %}{{ get_flashed_messages()|length }}{{ v }}{% endcache %}"


async def test_flashes_in_a_cached_block_raise_in_debug(cache_client: CacheClient) -> None:
    site = Site(cache_client, {"box.html": FLASHES})
    site.app.config["DEBUG"] = True

    with pytest.raises(FragmentCacheMisuse, match="flashes"):
        await site.render("box.html", v=1)


async def test_user_state_in_a_cached_block_renders_uncached_outside_debug(
    cache_client: CacheClient, spy: Spy
) -> None:
    site = Site(cache_client, {"box.html": FLASHES})

    assert await site.render("box.html", v=1) == "01"
    assert await site.render("box.html", v=2) == "02"
    assert spy.count("get_many") == spy.count("set") == 0


async def test_session_in_the_vary_values_may_be_read_in_the_block(
    cache_client: CacheClient
) -> None:
    site = Site(cache_client, {
        "box.html": "{% cache 60, 'hello', session.get('user', '-') %}"
                    "{{ session.get('user', '-') }}{{ v }}{% endcache %}"
    })
    site.app.config["DEBUG"] = True

    assert await site.render("box.html", v=1) == "-1"
    assert await site.render("box.html", v=2) == "-1"


async def test_without_a_fragment_cache_everything_renders_uncached() -> None:
    site = Site(None, {
        "box.html": "{% cache 60, 'box' %}{{ v }}{% endcache %}",
        "list.html": LIST,
        "row.html": ROW,
    })

    assert await site.render("box.html", v=1) == "1"
    assert await site.render("box.html", v=2) == "2"
    html = await site.render("list.html", items=items(2))
    assert html == "<ul><li>task 1</li><li>task 2</li></ul>"


async def test_item_without_a_version_is_a_clear_error(cache_client: CacheClient) -> None:
    site = Site(cache_client, {
        "list.html": "{{ cached_rows('row.html', items, as_='task') }}",
        "row.html": ROW,
    })
    with pytest.raises(Exception, match="version"):
        await site.render("list.html", items=[{"id": 1, "name": "a"}])


async def test_cache_down_renders_uncached(
    memcached: MemcachedProcess, make_backend: MakeBackend
) -> None:
    cache_client = CacheClient(make_backend([memcached.address]), keys=KeyBuilder("test"))
    site = Site(cache_client, {
        "page.html": "{% cache 60, 'list' %}{{ v }}{{ cached_rows('row.html', items, "
                     "as_='task', version=None) }}{% endcache %}",
        "row.html": ROW,
    })
    assert await site.render("page.html", v=1, items=items(1)) == "1<li>task 1</li>"

    memcached.kill()
    for v in (2, 3):
        html = await site.render("page.html", v=v, items=[Item(1, "fresh")])
        assert html == f"{v}<li>fresh</li>"
    await cache_client.close()

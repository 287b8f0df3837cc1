"""Rendering the site's templates in Jinja's sync mode.

Quart compiles templates in Jinja's async mode, where every expression, macro call and
include is awaited whether or not anything in it awaits. The site's templates await
nothing, so they are compiled a second time, in sync mode, by an environment that shares
Quart's loader, globals, filters, tests and policies: a template global registered on the
app is seen here too. `request`, `session` and `g` are globals (Quart's proxies), so no
context processor runs; register none that a page needs.

Cached fragments (`render_fragments`) are fetched before the page renders, since a sync
template cannot await the cache: the view passes their HTML to the page as data.
"""

from __future__ import annotations

from collections.abc import MutableMapping, Sequence
from typing import Any

from jinja2 import Environment
from markupsafe import Markup
from quart import Quart, current_app

from app.webcache.fragments import DEFAULT_TIMEOUT, fragment_cache_of, template_digest_of

EXTENSION_KEY = "templates"


class PageEnvironment(Environment):
    """A template without globals of its own reads the environment's directly.

    Jinja otherwise gives every template a `ChainMap` over the environment's globals, which
    it copies key by key, in Python, into the context of every render and every include.
    """

    def make_globals(self, d: MutableMapping[str, Any] | None) -> MutableMapping[str, Any]:
        return self.globals if not d else super().make_globals(d)


def init_app(app: Quart) -> None:
    """Give `app` the sync environment `render` uses."""
    quart_env = app.jinja_env
    env = PageEnvironment(
        loader=quart_env.loader,
        autoescape=quart_env.autoescape,
        auto_reload=quart_env.auto_reload,
    )
    env.globals = quart_env.globals
    env.filters = quart_env.filters
    env.tests = quart_env.tests
    env.policies = quart_env.policies
    app.extensions[EXTENSION_KEY] = env


def render(template: str, **context: Any) -> str:
    """The template rendered with `context` (inside a request or app context)."""
    env: Environment = current_app.extensions[EXTENSION_KEY]
    return env.get_template(template).render(context)


async def render_fragments(
    template: str, items: Sequence[Any], *, as_: str, key: str = "id", version: str = "version"
) -> list[Markup]:
    """`template` rendered once per item (the item as `as_`), in order. Each is a cached
    fragment (`app.webcache.fragments`) named by the template and the item's `key` (an int),
    valid for the item's `version` and the template's source in this release: one
    `get_many` for all, only the others rendered, and stored after the answer (off its
    critical path). Rendered uncached when the fragment cache is off."""
    env: Environment = current_app.extensions[EXTENSION_KEY]
    compiled = env.get_template(template)

    async def render_one(index: int) -> str:
        return compiled.render({as_: items[index]})

    fragments = fragment_cache_of(current_app.jinja_env)
    if fragments is None or not items:
        return [Markup(await render_one(index)) for index in range(len(items))]
    keys = fragments.keys_by_id(template, [int(env.getitem(item, key)) for item in items])
    versions = [str(env.getitem(item, version)) for item in items]
    digest = template_digest_of(current_app.jinja_env, template)
    html = await fragments.render_many(
        keys, versions, digest, render_one, DEFAULT_TIMEOUT, store_later=True
    )
    return [Markup(fragment) for fragment in html]

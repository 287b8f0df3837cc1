"""Fragment caching: the ``{% cache %}`` tag (Flask-Caching's syntax), `cached_rows`
(Rails' collection caching) and `FragmentCache.render_many`, which the sync page renderer
uses (`app.templating.render_fragments`).

A fragment's key names it (the ``fragment`` kind, a name, vary values or an item's key); its
entry holds the html as payload beside the template's digest, the release and the item's
version, and an entry whose three differ from the current ones is a miss. A versioned
fragment is kept in process memory too (`LocalFragments`), as fresh as memcached's copy.
Fail open: without a `FragmentCache`, or with the cache failing, everything renders uncached.
A tag that reads per-visitor state renders uncached (raises when DEBUG is on).
Details and reasons: docs/CACHE.md, "Fragments".
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from jinja2 import Environment, TemplateRuntimeError, Undefined, nodes, pass_context
from jinja2.ext import Extension
from jinja2.parser import Parser
from jinja2.runtime import Context
from markupsafe import Markup

from app.cache.client import CacheClient
from app.cache.keys import KeyKinds, digest

DEFAULT_TIMEOUT = 86_400
LOCAL_BYTES = 4 * 1024 * 1024  # of rendered html kept in each process (`LocalFragments`)

logger = logging.getLogger("app.webcache.fragments")

# How an item gives its key parts or version: an attribute (or mapping key) name, or a callable.
ItemField = str | Callable[[Any], Any]


class FragmentCacheMisuse(TemplateRuntimeError):
    """A cached block reads per-visitor state (session, flashed messages)."""


class LocalFragments:
    """The versioned fragments this process read or rendered lately, up to `limit` bytes of
    html, least recently used first out. A versioned fragment's key, template digest and
    version name its content exactly (the version changes with its item, the release is the
    process's own), so a copy kept here is as fresh as memcached's."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        # key -> (template digest, version, html, the key's server: for the hit counters)
        self._items: OrderedDict[str, tuple[str, str, str, str]] = OrderedDict()

    def get(self, key: str, template_digest: str, version: str) -> tuple[str, str] | None:
        """The html and its key's server, if this exact fragment is here."""
        item = self._items.get(key)
        if item is None or item[0] != template_digest or item[1] != version:
            return None
        self._items.move_to_end(key)
        return item[2], item[3]

    def discard(self, key: str) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self.size -= len(old[2])

    def put(self, key: str, template_digest: str, version: str, html: str, server: str) -> None:
        self.discard(key)
        if len(html) > self.limit:
            return
        self._items[key] = (template_digest, version, html, server)
        self.size += len(html)
        while self.size > self.limit:
            _, (_, _, dropped, _) = self._items.popitem(last=False)
            self.size -= len(dropped)


class FragmentCache:
    """Reads and writes rendered fragments through a `CacheClient` (see the module docstring),
    keeping the versioned ones this process used lately in memory (`LocalFragments`)."""

    def __init__(
        self, client: CacheClient, *, release: str = "", local_bytes: int = LOCAL_BYTES
    ) -> None:
        self.client = client
        self.release = release
        self.local = LocalFragments(local_bytes)
        self._storing: set[asyncio.Task[None]] = set()

    def make_template_fragment_key(self, name: str, vary_on: Iterable[Any] = ()) -> str:
        """The key the tag (or a row: `vary` then the row's key parts) uses for `name`/`vary_on`."""
        return self.client.keys.key(KeyKinds.FRAGMENT, name, *map(_key_part, vary_on))

    def keys_by_id(self, name: str, ids: Iterable[int]) -> list[str]:
        """``make_template_fragment_key(name, [id])`` for each id, built faster."""
        return self.client.keys.keys(KeyKinds.FRAGMENT, (name,), ids)

    async def fetch(
        self, keys: Sequence[str], template_digest: str, versions: Sequence[str | None]
    ) -> dict[str, str]:
        """The html of each key whose entry matches the digest and its version: from this
        process's memory if it is there (a versioned one), else from one get_many."""
        found = {}
        remote: dict[str, str | None] = {}
        for key, version in zip(keys, versions, strict=True):
            kept = None if version is None else self.local.get(key, template_digest, version)
            if kept is None:
                remote[key] = version
            else:
                found[key], server = kept
                self.client.counters.add("hits", KeyKinds.FRAGMENT, server)
        entries = await self.client.get_many(list(remote)) if remote else {}
        for key, version in remote.items():
            entry = entries.get(key)
            if entry is None:
                continue
            if entry.value == {"template": template_digest, "release": self.release,
                               "version": version} and entry.payload is not None:
                try:
                    found[key] = html = entry.payload.decode()
                except UnicodeDecodeError:
                    pass
                else:
                    if version is not None:
                        self._keep(key, template_digest, version, html)
                    continue
            self._recount_as_miss(key)
        return found

    async def store(
        self, rows: Mapping[str, tuple[str, str | None]], template_digest: str, ttl: int
    ) -> None:
        """Store ``{key: (html, version)}`` concurrently; failures are left to the client."""
        for key, (html, version) in rows.items():
            if version is not None:
                self._keep(key, template_digest, version, html)
        await asyncio.gather(*(
            self.client.set(
                key,
                {"template": template_digest, "release": self.release, "version": version},
                ttl,
                payload=html.encode(),
            )
            for key, (html, version) in rows.items()
        ))

    async def render_many(
        self,
        keys: Sequence[str],
        versions: Sequence[str | None],
        template_digest: str,
        render: Callable[[int], Awaitable[str]],
        ttl: int,
        *,
        store_later: bool = False,
    ) -> list[str]:
        """The html of each key, in order: what the cache holds for its version and the
        digest (one `get_many` for all), else `render(index)`, once per distinct key; the
        rendered ones are stored concurrently, before returning or, with `store_later`, in
        the background (`stored()` waits for those)."""
        found = await self.fetch(keys, template_digest, versions)
        rendered: dict[str, tuple[str, str | None]] = {}
        html = []
        for index, (key, version) in enumerate(zip(keys, versions, strict=True)):
            if key in found:
                html.append(found[key])
                continue
            if key not in rendered:
                rendered[key] = (await render(index), version)
            html.append(rendered[key][0])
        if not rendered:
            return html
        if store_later:
            task = asyncio.create_task(self.store(rendered, template_digest, ttl))
            self._storing.add(task)
            task.add_done_callback(self._storing.discard)
        else:
            await self.store(rendered, template_digest, ttl)
        return html

    async def stored(self) -> None:
        """Wait until the fragments being stored in the background are."""
        while self._storing:
            storing = list(self._storing)
            await asyncio.gather(*storing)
            self._storing.difference_update(storing)

    async def delete(self, key: str) -> None:
        self.local.discard(key)
        await self.client.delete(key)

    def _keep(self, key: str, template_digest: str, version: str, html: str) -> None:
        self.local.put(key, template_digest, version, html, self.client.backend.server_for(key))

    def _recount_as_miss(self, key: str) -> None:
        # The client saw a hit; for the dashboard an outdated fragment is a miss. No await
        # separates the two counts, so no snapshot sees the hit.
        server = self.client.backend.server_for(key)
        self.client.counters.add("hits", KeyKinds.FRAGMENT, server, -1)
        self.client.counters.add("misses", KeyKinds.FRAGMENT, server)


class CacheExtension(Extension):
    """The ``{% cache %}`` tag; needs an async environment (Quart's always is)."""

    tags = {"cache"}

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        if not environment.is_async:
            raise RuntimeError("CacheExtension needs an environment with enable_async=True")
        environment.extend(fragment_cache=None)
        self.digests: dict[str, str] = {}
        self._parsing = threading.local()
        self._warned: set[str] = set()

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        # Called with the whole source right before this template is parsed (and only
        # then), so the digest matches the compiled code exactly.
        self._parsing.digest = digest(source)
        if name is not None:
            self.digests[name] = self._parsing.digest
        return source

    def template_digest(self, name: str) -> str:
        """The digest of template `name` as compiled (read from the loader if it was not)."""
        found = self.digests.get(name)
        if found is None:
            loader = self.environment.loader
            if loader is None:
                raise RuntimeError("the environment has no loader to read templates from")
            source, _, _ = loader.get_source(self.environment, name)
            found = self.digests[name] = digest(source)
        return found

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        expiry = parser.parse_expression()
        if parser.stream.skip_if("comma"):
            name = parser.parse_expression()
        else:
            name = nodes.Const(f"{parser.name or '<string>'}:{lineno}")
        vary: list[nodes.Expr] = []
        while parser.stream.skip_if("comma"):
            vary.append(parser.parse_expression())
        body = parser.parse_statements(("name:endcache",), drop_needle=True)
        args = [
            expiry,
            name,
            nodes.List(vary),
            nodes.Const(self._parsing.digest),
            nodes.Const(_reads_user_state(body, vary)),
        ]
        return nodes.CallBlock(self.call_method("_render", args), [], [], body).set_lineno(lineno)

    async def _render(
        self,
        expiry: Any,
        name: str,
        vary: list[Any],
        template_digest: str,
        reads_user_state: bool,
        caller: Callable[[], Awaitable[str]],
    ) -> str:
        fragments = fragment_cache_of(self.environment)
        if reads_user_state:
            self._refuse_user_state(name)
            fragments = None
        if fragments is None:
            return await caller()
        key = fragments.make_template_fragment_key(name, vary)
        if expiry == "del":  # Flask-Caching's tag syntax, which this tag keeps whole
            await fragments.delete(key)
            return await caller()
        ttl = _ttl(expiry)
        found = await fragments.fetch([key], template_digest, [None])
        if key in found:
            return Markup(found[key])
        html = await caller()
        await fragments.store({key: (html, None)}, template_digest, ttl)
        return html

    def _refuse_user_state(self, name: str) -> None:
        """Raise in debug; otherwise warn once per name (the block then renders uncached)."""
        config = self.environment.globals.get("config")
        debug = isinstance(config, Mapping) and config.get("DEBUG")
        message = (
            f"{{% cache %}} block {name!r} reads session or get_flashed_messages: its cached "
            "copy would be served to other visitors (vary on the session, or move it out)"
        )
        if debug:
            raise FragmentCacheMisuse(message)
        if name not in self._warned:
            self._warned.add(name)
            logger.warning("%s; rendering it uncached", message)


@pass_context
async def cached_rows(
    context: Context,
    template_name: str,
    items: Iterable[Any],
    *,
    name: str | None = None,
    as_: str = "item",
    key: ItemField = "id",
    version: ItemField | None = "version",
    vary: Sequence[Any] = (),
    timeout: int | float | None = None,  # noqa: ASYNC109 (a cache TTL, as in the tag)
) -> Markup:
    """Render `template_name` once per item, reading all rows with one `get_many`.

    Each row's key is `name` (default: the template name), then `vary`, then `key(item)`
    (a tuple gives several parts); `version(item)` (compared as ``str``; ``None``: no
    version) is stored in the entry, so a changed item re-renders its row in place.
    `key`/`version` are callables or attribute names (mapping keys also work, as in Jinja).
    """
    env = context.environment
    template = env.get_template(template_name, parent=context.name)
    rows = list(items)
    outer = context.get_all()
    fragments = fragment_cache_of(env)
    if fragments is None or not rows:
        return Markup("".join([await template.render_async({**outer, as_: item}) for item in rows]))

    async def render(index: int) -> str:
        return await template.render_async({**outer, as_: rows[index]})

    prefix = template_name if name is None else name
    keys = [
        fragments.make_template_fragment_key(prefix, (*vary, *_key_parts(env, item, key)))
        for item in rows
    ]
    versions = [None if version is None else _version(env, item, version) for item in rows]
    template_digest = template_digest_of(env, template_name)
    html = await fragments.render_many(keys, versions, template_digest, render, _ttl(timeout))
    return Markup("".join(html))


def _key_parts(env: Environment, item: Any, key: ItemField) -> tuple[Any, ...]:
    parts = _field(env, item, key, "key")
    return parts if isinstance(parts, tuple) else (parts,)


def _version(env: Environment, item: Any, version: ItemField) -> str | None:
    found = _field(env, item, version, "version")
    return None if found is None else str(found)


def init_fragment_cache(env: Environment, fragments: FragmentCache | None) -> None:
    """Install the tag and `cached_rows` on `env` (once) and make them use `fragments`.

    ``None`` renders every block and row uncached (cache disabled, or the app stopped).
    Install it before the first template using ``{% cache %}`` is compiled.
    """
    if CacheExtension.identifier not in env.extensions:
        env.add_extension(CacheExtension)
    env.globals["cached_rows"] = cached_rows
    # An attribute CacheExtension declares with `Environment.extend`, Jinja's way for an
    # extension's state; typeshed cannot know it.
    env.fragment_cache = fragments  # type: ignore[attr-defined]  # declared by the extension


def fragment_cache_of(env: Environment) -> FragmentCache | None:
    """The `FragmentCache` `init_fragment_cache` gave `env`, or ``None`` (uncached)."""
    fragments: FragmentCache | None = getattr(env, "fragment_cache", None)
    return fragments


def template_digest_of(env: Environment, template_name: str) -> str:
    """The digest fragments of `template_name` are stored with (its source, as `env`'s loader
    gives it); needs `init_fragment_cache(env, ...)` first."""
    extension = env.extensions.get(CacheExtension.identifier)
    if not isinstance(extension, CacheExtension):
        raise RuntimeError("fragments need init_fragment_cache(env, ...) first")
    return extension.template_digest(template_name)


def _field(env: Environment, item: Any, field: ItemField, what: str) -> Any:
    if callable(field):
        return field(item)
    value = env.getattr(item, field)
    if isinstance(value, Undefined):
        raise TemplateRuntimeError(
            f"cached_rows: {type(item).__name__} item has no {field!r} for its {what}; "
            f"pass {what}=<attribute name or callable>"
        )
    return value


def _key_part(value: Any) -> str | int:
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return str(value)


def _ttl(timeout: Any) -> int:
    """Whole seconds (memcached's unit), rounded up."""
    if timeout is None:
        return DEFAULT_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise TemplateRuntimeError(
            f"cache timeout must be positive seconds, None or 'del', not {timeout!r}"
        )
    return math.ceil(timeout)


def _reads_user_state(body: list[nodes.Node], vary: list[nodes.Expr]) -> bool:
    def names(found_in: Iterable[nodes.Node]) -> set[str]:
        return {node.name for tree in found_in for node in tree.find_all(nodes.Name)}

    used = names(body)
    return "get_flashed_messages" in used or ("session" in used and "session" not in names(vary))

"""`@cached`: a view's declaration that the view cache may serve it.

What views import, and what the OpenAPI builder reads (`VIEW_CACHE_ATTRIBUTE`); nothing
here serves a request. The declaration is a `ViewCacheSpec` set on the view function:
`app.webcache.middleware` finds it through Quart's url map, and serves every GET or HEAD
of the route's rule in front of the framework.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

VIEW_CACHE_ATTRIBUTE = "view_cache"


@dataclass(frozen=True)
class ViewCacheSpec:
    timeout: int
    topics: tuple[str, ...]
    vary: tuple[str, ...]


def cached(
    timeout: int = 300, *, depends_on: Sequence[str] = (), vary: Sequence[str] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a GET view as cacheable for `timeout` seconds.

    `depends_on` names generation topics and may use the view's arguments
    (`"task-{task_id}"`). `vary` names the request headers that select a variant of the
    response (they also go into the response's `Vary`).
    """
    spec = ViewCacheSpec(timeout, tuple(depends_on), tuple(vary))

    def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
        setattr(view, VIEW_CACHE_ATTRIBUTE, spec)
        return view

    return decorator

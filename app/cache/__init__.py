"""The cache package: a fail-open client over memcached (or an in-process fallback)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .backends import CacheBackend, MemcachedBackend, MemoryBackend, ServerStatus
from .backends.null import NullBackend
from .client import CacheClient
from .entry import Entry
from .keys import KeyBuilder, namespace_of
from .stats import CacheCounters

if TYPE_CHECKING:
    from app.settings import Settings

__all__ = [
    "CacheBackend",
    "CacheClient",
    "CacheCounters",
    "Entry",
    "KeyBuilder",
    "MemcachedBackend",
    "MemoryBackend",
    "ServerStatus",
    "make_cache_client",
    "namespace_of",
]


def make_cache_client(settings: Settings) -> CacheClient:
    """memcached when `settings.memcache_servers` is set, else the in-process LRU; a
    backend that stores nothing when the cache is switched off. No I/O."""
    backend: CacheBackend
    if not settings.cache_enabled:
        backend = NullBackend()
    elif settings.memcache_servers:
        backend = MemcachedBackend(
            settings.memcache_servers,
            username=settings.memcache_username,
            password=settings.memcache_password,
            auth_mode=settings.memcache_auth_mode,
            connect_timeout=settings.cache_connect_timeout,
            op_timeout=settings.cache_op_timeout,
            pool_size=settings.cache_pool_size,
            retry_timeout=settings.cache_retry_timeout,
            dead_timeout=settings.cache_dead_timeout,
            failure_limit=settings.cache_failure_limit,
        )
    else:
        backend = MemoryBackend(max_items=settings.cache_memory_max_items)
    return CacheClient(
        backend,
        keys=KeyBuilder(settings.cache_key_prefix),
        max_item_size=settings.cache_max_item_size,
    )

"""The cache package: a fail-open client over memcached (or an in-process fallback)."""

from __future__ import annotations

from .backends import CacheBackend, MemcachedBackend, MemoryBackend, ServerStatus
from .client import CacheClient
from .entry import Entry
from .keys import KeyBuilder, kind_of
from .stats import CacheCounters

__all__ = [
    "CacheBackend",
    "CacheClient",
    "CacheCounters",
    "Entry",
    "KeyBuilder",
    "MemcachedBackend",
    "MemoryBackend",
    "ServerStatus",
    "kind_of",
]

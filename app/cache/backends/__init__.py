"""Cache backends: bytes in, bytes out (see `base.CacheBackend`)."""

from .base import CacheBackend, PartialResult, ServerStatus, ServerUnavailable, ValueTooLarge
from .memcached import MemcachedBackend
from .memory import MemoryBackend

__all__ = [
    "CacheBackend",
    "MemcachedBackend",
    "MemoryBackend",
    "PartialResult",
    "ServerStatus",
    "ServerUnavailable",
    "ValueTooLarge",
]

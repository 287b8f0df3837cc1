"""The one cache key builder.

A key is ``<prefix>:<schema>:<kind>:<part>:<part>...``. A part made only of
``[A-Za-z0-9._-]`` (at most 64 characters) stays readable; any other part is hashed and
rendered as ``~`` plus 22 base64url characters. Readable parts never contain ``~``, ``*`` or
``:``, so the rendering is injective: ``"a b"`` and ``"a_b"`` are different keys. A key that
would still exceed 250 bytes keeps its header and replaces the parts with ``*`` plus the hash
of their rendering. Every key is printable ASCII, without whitespace, at most 250 bytes.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterable, Sequence
from typing import Final

MAX_KEY_BYTES = 250
# A readable part, and what a prefix and a kind must be.
_READABLE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_FORBIDDEN = bytes(range(0, 33)) + b"\x7f"  # whitespace and control characters


class KeyKinds:
    """Every key's kind, its first part after the header: what kind of entry it is.
    The dashboard counts hits and misses by it."""

    MEMOIZE: Final = "memoize"  # memoized results
    VIEW: Final = "view"  # whole responses
    FRAGMENT: Final = "fragment"  # rendered template fragments
    SESSION: Final = "session"  # session data
    GENERATION: Final = "gen"  # generation tokens
    LEASE: Final = "lease"  # who is computing a missing value
    PEERS: Final = "peers"  # the directory of app processes
    LIMIT: Final = "limit"  # counters of a rate limit


class InvalidKey(ValueError):
    """A key that memcached's text protocol cannot carry."""


def digest(text: str) -> str:
    """sha256 of `text`, base64url without padding, truncated to 22 characters (132 bits)."""
    raw = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()
    return base64.urlsafe_b64encode(raw).decode("ascii")[:22]


def _render(part: object) -> str:
    if isinstance(part, bool) or not isinstance(part, (str, int)):
        raise TypeError(f"key parts must be str or int, not {type(part).__name__}")
    text = str(part)
    return text if _READABLE.fullmatch(text) else "~" + digest(text)


class KeyBuilder:
    """Builds every cache key of the app (see the module docstring for the format).

    An int part and the str of the same digits are the same part.
    """

    def __init__(self, prefix: str = "tasklist", schema_version: int = 1) -> None:
        if not _READABLE.fullmatch(prefix):
            raise ValueError(f"cache key prefix must match {_READABLE.pattern}: {prefix!r}")
        if schema_version < 0:
            raise ValueError("schema_version must be >= 0")
        self.prefix = prefix
        self.schema_version = schema_version
        self._head = f"{prefix}:{schema_version}:"

    def key(self, kind: str, *parts: object) -> str:
        if not _READABLE.fullmatch(kind):
            raise ValueError(f"cache kind must match {_READABLE.pattern}: {kind!r}")
        head = self._head + kind
        if not parts:
            return head
        tail = ":".join(_render(part) for part in parts)
        key = f"{head}:{tail}"
        if len(key) > MAX_KEY_BYTES:
            key = f"{head}:*{digest(tail)}"
        return key

    def keys(self, kind: str, parts: Sequence[object], last: Iterable[int]) -> list[str]:
        """``key(kind, *parts, n)`` for each int `n` of `last`, the shared head built
        once (a page's hundred fragment keys cost one hash, not a hundred)."""
        head = self.key(kind, *parts)
        keys = []
        for n in last:
            key = f"{head}:{n}"
            if isinstance(n, bool) or not isinstance(n, int) or len(key) > MAX_KEY_BYTES:
                key = self.key(kind, *parts, n)  # as built (or refused) one by one
            keys.append(key)
        return keys

    def __repr__(self) -> str:
        return f"KeyBuilder(prefix={self.prefix!r}, schema_version={self.schema_version})"


def kind_of(key: str) -> str:
    """The kind segment of a key built by `KeyBuilder`, or ``"-"`` for a foreign key."""
    segments = key.split(":", 3)
    return segments[2] if len(segments) >= 3 else "-"


def validate_key(key: str) -> bytes:
    """The key as bytes; raises `InvalidKey` unless it is 1-250 bytes of printable ASCII
    (`TypeError` unless it is a string)."""
    if not isinstance(key, str):
        raise TypeError(f"cache keys are strings, not {type(key).__name__}")
    try:
        raw = key.encode("ascii")
    except UnicodeEncodeError:
        raise InvalidKey("cache keys must be ASCII") from None
    if not 0 < len(raw) <= MAX_KEY_BYTES or raw.translate(None, _FORBIDDEN) != raw:
        raise InvalidKey("cache keys must be 1-250 printable bytes without whitespace")
    return raw

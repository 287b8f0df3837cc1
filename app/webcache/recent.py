"""Responses of the view cache as it stores them, and the ones this process served lately.

`StoredResponse` is what `ViewCacheMiddleware` keeps under a view's key: the generation
tokens it was rendered under, its headers, and its body as bytes, gzipped once when it is
worth it; a client that does not take gzip gets them decompressed, once per process.
`RecentResponses` keeps the last ones served in this process, bounded by bytes. The
middleware serves a kept response only while the tokens it reads from memcached for the
request are the ones it was built under, so it is exactly as fresh as the entry in
memcached, in every process (docs/CACHE.md, "Whole-view caching").
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

Headers = list[tuple[bytes, bytes]]

GZIP_MIN_BYTES = 1024  # smaller bodies gain too little from compression to pay for it
# zlib's level 3: far cheaper than the default level 6 for nearly the same size, and every
# miss (so every write) pays it (docs/PERFORMANCE.md, "Task list over HTTP").
GZIP_LEVEL = 3


@dataclass(slots=True)
class StoredResponse:
    tokens: list[Any]
    headers: Headers  # as replayed: none of Content-Length, Content-Encoding, ETag, X-Cache
    body: bytes  # gzipped when `gzipped`
    gzipped: bool
    length: int  # of the body as the view rendered it (before gzip)
    created: float
    soft_expires: float
    expires: float
    _identity: bytes | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        tokens: list[Any],
        headers: Headers,
        body: bytes,
        *,
        created: float,
        timeout: float,
        compress: bool,
    ) -> StoredResponse:
        """A freshly rendered response; `compress`: gzip the body (if large enough)."""
        gzipped = compress and len(body) >= GZIP_MIN_BYTES
        stored = gzip(body) if gzipped else body
        response = cls(tokens, headers, stored, gzipped, len(body), created, created + timeout,
                       created + 2 * timeout)
        response._identity = body
        return response

    def to_cache(self) -> tuple[dict[str, Any], bytes]:
        """The JSON part and the payload of its cache entry (see `from_cache`)."""
        meta = {
            "tokens": self.tokens,
            "headers": [[name.decode("latin-1"), value.decode("latin-1")]
                        for name, value in self.headers],
            "encoding": "gzip" if self.gzipped else "identity",
            "length": self.length,
        }
        return meta, self.body

    @classmethod
    def from_cache(
        cls, meta: Any, payload: bytes | None, *, created: float, soft_expires: float | None,
        timeout: float,
    ) -> StoredResponse | None:
        """The response in a cache entry, or ``None`` if the entry is not one."""
        if payload is None or not isinstance(meta, dict) or soft_expires is None:
            return None
        try:
            headers = [(name.encode("latin-1"), value.encode("latin-1"))
                       for name, value in meta["headers"]]
            tokens, gzipped, length = meta["tokens"], meta["encoding"] == "gzip", meta["length"]
        except (KeyError, TypeError, ValueError, UnicodeEncodeError):
            return None
        if not isinstance(tokens, list) or not isinstance(length, int):
            return None
        return cls(tokens, headers, payload, gzipped, length, created, soft_expires,
                   created + 2 * timeout)

    @property
    def size(self) -> int:
        """The bytes it holds once it has served both kinds of client."""
        return len(self.body) + (self.length if self.gzipped else 0)

    def body_for(self, accepts_gzip: bool) -> tuple[bytes, bool]:
        """The body to send and whether it is gzipped; decompresses at most once."""
        if not self.gzipped or accepts_gzip:
            return self.body, self.gzipped
        if self._identity is None:
            self._identity = zlib.decompress(self.body, wbits=31)
        return self._identity, False


class RecentResponses:
    """An LRU of `StoredResponse`s by key, holding at most `max_bytes` of bodies."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._responses: OrderedDict[str, StoredResponse] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._bytes = 0

    def get(self, key: str) -> StoredResponse | None:
        response = self._responses.get(key)
        if response is not None:
            self._responses.move_to_end(key)
        return response

    def put(self, key: str, response: StoredResponse) -> None:
        self.discard(key)
        size = response.size
        if size > self.max_bytes:
            return
        self._responses[key] = response
        self._sizes[key] = size
        self._bytes += size
        while self._bytes > self.max_bytes:
            oldest, _ = self._responses.popitem(last=False)
            self._bytes -= self._sizes.pop(oldest)

    def discard(self, key: str) -> None:
        if self._responses.pop(key, None) is not None:
            self._bytes -= self._sizes.pop(key)

    def __len__(self) -> int:
        return len(self._responses)

    @property
    def bytes(self) -> int:
        return self._bytes


def gzip(body: bytes) -> bytes:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: the gzip container
    return compressor.compress(body) + compressor.flush()

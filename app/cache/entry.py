"""The value envelope: what the cache stores for every entry (JSON, never pickle).

Wire format: one header byte then the payload.
``J`` + JSON ``{"d": value, "t": created, "x": soft_expires}``; ``Z`` + the same JSON
zlib-compressed (used from `compress_threshold` bytes). A bare ASCII integer (a counter
written by ``incr``) decodes to an entry holding that int.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

PLAIN = b"J"
COMPRESSED = b"Z"
DEFAULT_COMPRESS_THRESHOLD = 1024

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_scan = json.JSONDecoder().scan_once  # the C scanner: decode() minus its whitespace regexes


@dataclass(frozen=True, slots=True)
class Entry:
    """A cached value; `value` may be ``None`` (a real, cached ``None``).

    `created` and `soft_expires` are wall-clock seconds (``time.time()``); `soft_expires`
    is when the value should be refreshed although the server still holds it.
    """

    value: Any
    created: float
    soft_expires: float | None = None

    def is_stale(self, now: float) -> bool:
        return self.soft_expires is not None and now >= self.soft_expires


def encode(entry: Entry, *, compress_threshold: int = DEFAULT_COMPRESS_THRESHOLD) -> bytes:
    """Serialise an entry; raises `TypeError`/`ValueError` for a value JSON cannot hold."""
    payload = _dumps({"d": entry.value, "t": entry.created, "x": entry.soft_expires}).encode()
    if len(payload) >= compress_threshold:
        return COMPRESSED + zlib.compress(payload, 1)
    return PLAIN + payload


def decode(data: bytes) -> Entry | None:
    """The entry in `data`, or ``None`` if `data` is not a valid envelope (never raises)."""
    try:
        header = data[:1]
        if header == PLAIN:
            text = data[1:].decode()
        elif header == COMPRESSED:
            text = zlib.decompress(data[1:]).decode()
        elif data.isdigit():
            return Entry(int(data), 0.0)
        else:
            return None
        doc, end = _scan(text, 0)
        created, soft = doc["t"], doc["x"]
        if end != len(text) or not isinstance(created, int | float):
            return None
        if soft is not None and not isinstance(soft, int | float):
            return None
        return Entry(doc["d"], created, soft)
    except (ValueError, TypeError, KeyError, IndexError, StopIteration, zlib.error):
        return None

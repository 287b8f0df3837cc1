"""The value envelope: what the cache stores for every entry (JSON, never pickle).

One header byte, then: ``O`` + JSON ``{"value": ..., "created": ..., "soft_expires": ...}``
with no run of 20+ digits (read with orjson; trusted, never scanned again); ``J`` + the same
JSON when it holds such a run (read with the stdlib); ``Z`` + the JSON zlib-compressed (from
`compress_threshold` bytes); ``B`` + the JSON's length (4 bytes, big-endian) + the JSON + a
raw `payload`, stored as it is. Anything else is not an entry: a miss. Encoding uses the
stdlib (NaN and non-JSON types are rejected); decoding always gives the stdlib's answer.
Releases share memcached while a deploy rolls: a change here must leave each release reading
the other's entries right or as misses; the old field names ``d``, ``t``, ``x`` are still
read (docs/CACHE.md, "Keys and values").
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

SAFE = b"O"  # plain JSON that orjson reads exactly as the stdlib
PLAIN = b"J"  # plain JSON, orjson-safety unknown: scanned when read
COMPRESSED = b"Z"
BINARY = b"B"  # JSON, then a raw payload
DEFAULT_COMPRESS_THRESHOLD = 1024
_NUMBER = (int, float)

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
# the C scanner: decode() minus its whitespace regexes (typeshed does not list it)
_scan: Callable[[str, int], tuple[Any, int]] = vars(json.JSONDecoder())["scan_once"]
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_DIGITS = bytes.maketrans(b"0123456789", b"9999999999")
_LONG_NUMBER = b"9" * 20  # 19 digits always fit in 64 bits; 20 may not


@dataclass(frozen=True, slots=True)
class Entry:
    """A cached value; `value` may be ``None`` (a real, cached ``None``).

    `created` and `soft_expires` are wall-clock seconds (``time.time()``); `soft_expires`
    is when the value should be refreshed although the server still holds it. `payload`
    is raw bytes stored beside the (JSON) value, if any.
    """

    value: Any
    created: float
    soft_expires: float | None = None
    payload: bytes | None = None

    def is_stale(self, now: float) -> bool:
        return self.soft_expires is not None and now >= self.soft_expires


def encode(entry: Entry, *, compress_threshold: int = DEFAULT_COMPRESS_THRESHOLD) -> bytes:
    """Serialise an entry; raises `TypeError`/`ValueError` for a value JSON cannot hold."""
    payload = _dumps(
        {"value": entry.value, "created": entry.created, "soft_expires": entry.soft_expires}
    ).encode()
    if entry.payload is not None:
        return BINARY + len(payload).to_bytes(4, "big") + payload + entry.payload
    if len(payload) >= compress_threshold:
        return COMPRESSED + zlib.compress(payload, 1)
    if _LONG_NUMBER in payload.translate(_DIGITS):
        return PLAIN + payload
    return SAFE + payload


def decode(data: bytes) -> Entry | None:
    """The entry in `data`, or ``None`` if `data` is not a valid envelope (never raises)."""
    if data.startswith(b"O{") and data.endswith(b"}"):  # the common case, no digit scan
        return _decode_safe(data[1:])
    header, body = data[:1], data[1:]
    if header == SAFE or header == PLAIN:
        return _decode_json(body)
    if header == COMPRESSED:
        try:
            return _decode_json(zlib.decompress(body))
        except zlib.error:
            return None
    if header == BINARY:
        return _decode_binary(body)
    return None


def decode_many[K](found: dict[K, bytes]) -> tuple[dict[K, Entry], list[K]]:
    """`decode` over a batch: the entries by name, and the names whose bytes were not valid
    envelopes."""
    entries: dict[K, Entry] = {}
    bad: list[K] = []
    for name, data in found.items():
        if data.startswith(b"O{") and data.endswith(b"}"):  # `decode`'s common case, inlined
            entry = _decode_safe(data[1:])
        else:
            entry = decode(data)
        if entry is None:
            bad.append(name)
        else:
            entries[name] = entry
    return entries, bad


def _decode_safe(payload: bytes) -> Entry | None:
    """JSON written under the ``O`` header: orjson reads it as the stdlib would."""
    try:
        doc = _loads(payload)
    except _JSONDecodeError:
        return _decode_stdlib(payload)
    return _envelope(doc)


def _decode_json(payload: bytes) -> Entry | None:
    """JSON that orjson may read differently from the stdlib: orjson only where it cannot."""
    # orjson tolerates surrounding whitespace where the stdlib scanner does not: require braces
    if payload[:1] != b"{" or payload[-1:] != b"}" or _LONG_NUMBER in payload.translate(_DIGITS):
        return _decode_stdlib(payload)
    return _decode_safe(payload)


def _decode_binary(body: bytes) -> Entry | None:
    """A ``B`` body: the JSON's length, the JSON, then the payload."""
    size = int.from_bytes(body[:4], "big")
    if len(body) < 4 + size:
        return None
    entry = _decode_stdlib(body[4 : 4 + size])
    if entry is not None:
        _set_payload(entry, body[4 + size :])
    return entry


def _decode_stdlib(payload: bytes) -> Entry | None:
    try:
        text = payload.decode()
        doc, end = _scan(text, 0)
    except (ValueError, StopIteration):
        return None
    return _envelope(doc) if end == len(text) else None


def _envelope(doc: Any) -> Entry | None:
    """The entry a decoded JSON document holds, or ``None`` if it is not an envelope."""
    try:
        value, created, soft = doc["value"], doc["created"], doc["soft_expires"]
    except (TypeError, KeyError, IndexError):
        try:
            value, created, soft = doc["d"], doc["t"], doc["x"]  # the legacy names (above)
        except (TypeError, KeyError, IndexError):
            return None
    if not isinstance(created, _NUMBER) or not (soft is None or isinstance(soft, _NUMBER)):
        return None
    entry = _new_entry(Entry)  # Entry(value, created, soft) minus the frozen __init__'s cost
    _set_value(entry, value)
    _set_created(entry, created)
    _set_soft(entry, soft)
    _set_payload(entry, None)
    return entry


# The slots' descriptors, to fill an `Entry` made by `object.__new__` (mypy does not type
# a slot as a descriptor on the class: read them from the class's namespace).
_new_entry = object.__new__
_set_value: Callable[[Entry, Any], None] = vars(Entry)["value"].__set__
_set_created: Callable[[Entry, float], None] = vars(Entry)["created"].__set__
_set_soft: Callable[[Entry, float | None], None] = vars(Entry)["soft_expires"].__set__
_set_payload: Callable[[Entry, bytes | None], None] = vars(Entry)["payload"].__set__

"""The value envelope: what the cache stores for every entry (JSON, never pickle).

Wire format: one header byte then the payload.
``O`` + JSON ``{"d": value, "t": created, "x": soft_expires}`` that orjson reads exactly as
the stdlib does (no run of 20+ digits: checked when written, so reads skip the scan);
``J`` + the same JSON when it holds such a run (or written before ``O`` existed);
``Z`` + the JSON zlib-compressed (used from `compress_threshold` bytes);
``B`` + the JSON's length (4 bytes, big-endian) + the JSON + raw bytes: an entry with a
`payload` (a response body, say), stored as it is, never inside a JSON string nor
compressed again (its owner chooses its encoding). A bare ASCII
integer (a counter written by ``incr``) decodes to an entry holding that int. A reader
that predates ``O`` reads an ``O`` entry as garbage, i.e. a miss (fail open), and rewrites it.
The ``O`` header is trusted (only `encode` writes it): its payload is not scanned again.

Encoding stays with the stdlib (it rejects NaN and non-JSON types; orjson would write NaN
as null and accept UUIDs, enums, dataclasses). Decoding uses orjson (~0.5 us against ~2.5 us)
whenever it gives exactly the stdlib's answer: not for a payload with a run of 20+ digits
(orjson reads integers beyond 64 bits as floats) nor for one it rejects (the stdlib decides).
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

SAFE = b"O"  # plain JSON that orjson reads exactly as the stdlib
PLAIN = b"J"  # plain JSON, orjson-safety unknown: scanned when read
COMPRESSED = b"Z"
BINARY = b"B"  # JSON, then a raw payload
DEFAULT_COMPRESS_THRESHOLD = 1024

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode
_scan = json.JSONDecoder().scan_once  # the C scanner: decode() minus its whitespace regexes
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
    payload = _dumps({"d": entry.value, "t": entry.created, "x": entry.soft_expires}).encode()
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
        try:
            doc = _loads(data[1:])
        except _JSONDecodeError:
            return _decode_stdlib(data[1:])
        try:
            created, soft = doc["t"], doc["x"]
            value = doc["d"]
        except (TypeError, KeyError, IndexError):
            return None
        if type(created) is not float and not isinstance(created, int | float):
            return None
        if soft is not None and type(soft) is not float and not isinstance(soft, int | float):
            return None
        entry = _new_entry(Entry)
        _set_value(entry, value)
        _set_created(entry, created)
        _set_soft(entry, soft)
        _set_payload(entry, None)
        return entry
    header = data[:1]
    if header == BINARY:
        return _decode_binary(data)
    try:
        if header == PLAIN or header == SAFE:
            payload = data[1:]
        elif header == COMPRESSED:
            payload = zlib.decompress(data[1:])
        elif data.isdigit():
            return Entry(int(data), 0.0)
        else:
            return None
    except zlib.error:
        return None
    # orjson tolerates surrounding whitespace where the stdlib scanner does not: require braces
    if payload[:1] != b"{" or payload[-1:] != b"}" or _LONG_NUMBER in payload.translate(_DIGITS):
        return _decode_stdlib(payload)
    try:
        doc = _loads(payload)
    except _JSONDecodeError:
        return _decode_stdlib(payload)
    return _envelope(doc)


def decode_many[K](found: dict[K, bytes]) -> tuple[dict[K, Entry], list[K]]:
    """`decode` over a batch: the entries by name, and the names whose bytes were not valid
    envelopes. The ``O`` case is `decode`'s, inlined (no call per value)."""
    entries: dict[K, Entry] = {}
    bad: list[K] = []
    new, set_value, set_created, set_soft = _new_entry, _set_value, _set_created, _set_soft
    set_payload = _set_payload
    loads = _loads
    for name, data in found.items():
        if data.startswith(b"O{") and data.endswith(b"}"):
            try:
                doc = loads(data[1:])
                created, soft = doc["t"], doc["x"]
                value = doc["d"]
            except Exception:  # not orjson's JSON, or not an envelope: decode decides
                entry = decode(data)
            else:
                if (type(created) is not float and not isinstance(created, int | float)) or (
                    soft is not None
                    and type(soft) is not float
                    and not isinstance(soft, int | float)
                ):
                    entry = None
                else:
                    entry = new(Entry)
                    set_value(entry, value)
                    set_created(entry, created)
                    set_soft(entry, soft)
                    set_payload(entry, None)
        else:
            entry = decode(data)
        if entry is None:
            bad.append(name)
        else:
            entries[name] = entry
    return entries, bad


def _decode_binary(data: bytes) -> Entry | None:
    size = int.from_bytes(data[1:5], "big")
    if len(data) < 5 + size:
        return None
    entry = _decode_stdlib(data[5 : 5 + size])
    if entry is not None:
        _set_payload(entry, data[5 + size :])
    return entry


def _decode_stdlib(payload: bytes) -> Entry | None:
    try:
        text = payload.decode()
        doc, end = _scan(text, 0)
    except (ValueError, StopIteration):
        return None
    return _envelope(doc) if end == len(text) else None


def _envelope(doc: Any) -> Entry | None:
    try:
        created, soft = doc["t"], doc["x"]
        value = doc["d"]
    except (TypeError, KeyError, IndexError):
        return None
    if not isinstance(created, int | float):
        return None
    if soft is not None and not isinstance(soft, int | float):
        return None
    entry = _new_entry(Entry)  # Entry(value, created, soft) minus the frozen __init__'s cost
    _set_value(entry, value)
    _set_created(entry, created)
    _set_soft(entry, soft)
    _set_payload(entry, None)
    return entry


_new_entry = object.__new__
_set_value = Entry.value.__set__  # type: ignore[attr-defined]  # slot descriptors
_set_created = Entry.created.__set__  # type: ignore[attr-defined]
_set_soft = Entry.soft_expires.__set__  # type: ignore[attr-defined]
_set_payload = Entry.payload.__set__  # type: ignore[attr-defined]

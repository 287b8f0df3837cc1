"""The value envelope: every header, the field names old and new, and garbage."""

import json
import zlib

import pytest

from app.cache.entry import BINARY, COMPRESSED, PLAIN, SAFE, Entry, decode, decode_many, encode


@pytest.mark.parametrize(
    "value", [None, 0, "", [], {}, "é ✓", {"rows": [1, 2.5, None, True]}, [[["deep"]]]]
)
def test_round_trip(value: object) -> None:
    entry = Entry(value, 1700000000.25, 1700000060.0)
    assert decode(encode(entry)) == entry


def test_none_is_a_value_not_a_miss() -> None:
    data = encode(Entry(None, 1.0))
    assert data.startswith(SAFE)
    assert decode(data) == Entry(None, 1.0, None)


def test_payloads_from_threshold_are_compressed() -> None:
    small = encode(Entry("x" * 10, 1.0), compress_threshold=1024)
    big_entry = Entry("x" * 5000, 1.0)
    big = encode(big_entry, compress_threshold=1024)
    assert small[:1] == SAFE
    assert big[:1] == COMPRESSED and len(big) < 200
    assert decode(big) == big_entry


@pytest.mark.parametrize(
    "value", [10**19, 2**64, -(2**70), [1, 12345678901234567890123], "digits 123456789012345678901"]
)
def test_long_digit_runs_are_written_with_the_unscanned_header_and_read_exactly(
    value: object,
) -> None:
    entry = Entry(value, 1.0)
    data = encode(entry)
    assert data[:1] == PLAIN
    decoded = decode(data)
    assert decoded == entry and type(decoded.value) is type(value)


def test_19_digit_runs_are_orjson_safe() -> None:
    entry = Entry([9_223_372_036_854_775_807, -999_999_999_999_999_999], 1.0)
    data = encode(entry)
    assert data[:1] == SAFE and decode(data) == entry


@pytest.mark.parametrize(
    "value", [None, 0, 2**70, "é ✓", {"rows": [1, 2.5, None, True]}, 1e300, -0.0]
)
def test_entries_written_before_the_safe_header_still_read(value: object) -> None:
    legacy = PLAIN + json.dumps({"d": value, "t": 1.5, "x": None}, separators=(",", ":")).encode()
    assert decode(legacy) == Entry(value, 1.5)


def test_the_envelope_spells_its_fields_out() -> None:
    assert encode(Entry(1, 2.5, 3.0)) == b'O{"value":1,"created":2.5,"soft_expires":3.0}'


@pytest.mark.parametrize("header", [SAFE, PLAIN, COMPRESSED, BINARY])
def test_entries_with_the_old_one_letter_fields_still_read(header: bytes) -> None:
    """What the release before wrote (a rolling deploy shares memcached): its generation
    tokens and sessions stay readable."""
    old = json.dumps({"d": ["tok"], "t": 1.5, "x": 9.0}, separators=(",", ":")).encode()
    if header == COMPRESSED:
        data = COMPRESSED + zlib.compress(old)
    elif header == BINARY:
        data = BINARY + len(old).to_bytes(4, "big") + old + b"body"
    else:
        data = header + old
    expected = Entry(["tok"], 1.5, 9.0, b"body" if header == BINARY else None)
    assert decode(data) == expected
    assert decode_many({"k": data}) == ({"k": expected}, [])


def test_safe_header_envelopes_are_checked_like_the_others() -> None:
    assert decode(SAFE + b'{"value":1,"created":2,"soft_expires":null}') == Entry(1, 2)
    assert decode(SAFE + b'{"value":1,"created":2.5,"soft_expires":3}') == Entry(1, 2.5, 3)
    assert decode(SAFE + b'{"value":[1,{"a":null}],"created":2.5,"soft_expires":null}') == (
        Entry([1, {"a": None}], 2.5)
    )
    assert decode(SAFE + b'{"d":1,"t":2,"x":null}') == Entry(1, 2)


@pytest.mark.parametrize(
    "garbage",
    [b"", b"J", b"O", b"O{", b'O {"d":1,"t":1,"x":null}', b'O{"d":1,"t":1,"x":null} ',
     b'O{"d":1,"t":"1","x":null}', b'O{"d":1,"t":1,"x":"2"}', b'O{"d":1}', b"O{}", b"O{1}",
     b'O["d","t","x"]', b"Jnot json", b"Z\x00\x01", b"J[1,2]", b'J{"d":1}',
     b'J{"d":1,"t":"x","x":null}', b"\x80\x04pickle", COMPRESSED + zlib.compress(b"\xff\xfe"),
     b'O{"value":1,"created":"1","soft_expires":null}', b'O{"value":1,"created":1}',
     b'O{"value":1,"t":1,"x":null}', b"42", b"B\x00\x00\x00\x09{}"],
)
def test_garbage_decodes_to_none(garbage: bytes) -> None:
    assert decode(garbage) is None


def test_unserialisable_values_are_rejected() -> None:
    with pytest.raises(TypeError):
        encode(Entry(object(), 1.0))
    with pytest.raises(ValueError):
        encode(Entry(float("nan"), 1.0))


def test_staleness() -> None:
    assert not Entry(1, 0.0).is_stale(10**10)
    entry = Entry(1, 0.0, 5.0)
    assert not entry.is_stale(4.9)
    assert entry.is_stale(5.0)


def test_decode_many_agrees_with_decode() -> None:
    found = {
        "safe": encode(Entry({"a": [1, None]}, 1.0, 2.0)),
        "none": encode(Entry(None, 1.0)),
        "long": encode(Entry(2**70, 1.0)),
        "big": encode(Entry("x" * 5000, 1.0)),
        "old": b'O{"d":1,"t":1.5,"x":null}',
        "garbage": b"Jnot json",
        "forged": b'O{"value":1,"created":"x","soft_expires":null}',
        "not-envelope": b"O{}",
        "bad-json": b"O{1}",
    }
    entries, bad = decode_many(found)
    assert entries == {
        name: entry for name, data in found.items() if (entry := decode(data)) is not None
    }
    assert bad == ["garbage", "forged", "not-envelope", "bad-json"]
    assert entries["none"] == Entry(None, 1.0)

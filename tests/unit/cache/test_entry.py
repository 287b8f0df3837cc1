import zlib

import pytest

from app.cache.entry import COMPRESSED, PLAIN, Entry, decode, encode


@pytest.mark.parametrize(
    "value", [None, 0, "", [], {}, "é ✓", {"rows": [1, 2.5, None, True]}, [[["deep"]]]]
)
def test_round_trip(value):
    entry = Entry(value, 1700000000.25, 1700000060.0)
    assert decode(encode(entry)) == entry


def test_none_is_a_value_not_a_miss():
    data = encode(Entry(None, 1.0))
    assert data.startswith(PLAIN)
    assert decode(data) == Entry(None, 1.0, None)


def test_payloads_from_threshold_are_compressed():
    small = encode(Entry("x" * 10, 1.0), compress_threshold=1024)
    big_entry = Entry("x" * 5000, 1.0)
    big = encode(big_entry, compress_threshold=1024)
    assert small[:1] == PLAIN
    assert big[:1] == COMPRESSED and len(big) < 200
    assert decode(big) == big_entry


@pytest.mark.parametrize(
    "garbage",
    [b"", b"J", b"Jnot json", b"Z\x00\x01", b"J[1,2]", b'J{"d":1}', b'J{"d":1,"t":"x","x":null}',
     b"\x80\x04pickle", COMPRESSED + zlib.compress(b"\xff\xfe")],
)
def test_garbage_decodes_to_none(garbage):
    assert decode(garbage) is None


def test_counter_decodes_to_int():
    assert decode(b"42") == Entry(42, 0.0)


def test_unserialisable_values_are_rejected():
    with pytest.raises(TypeError):
        encode(Entry(object(), 1.0))
    with pytest.raises(ValueError):
        encode(Entry(float("nan"), 1.0))


def test_staleness():
    assert not Entry(1, 0.0).is_stale(10**10)
    entry = Entry(1, 0.0, 5.0)
    assert not entry.is_stale(4.9)
    assert entry.is_stale(5.0)

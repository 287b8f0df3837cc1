import pytest

from app.cache.keys import InvalidKey, KeyBuilder, kind_of, validate_key

keys = KeyBuilder("tasklist", 3)


def test_readable_parts_stay_readable() -> None:
    assert keys.key("tasks", "list", 42, "v1.2_x-y") == "tasklist:3:tasks:list:42:v1.2_x-y"
    assert keys.key("tasks") == "tasklist:3:tasks"


def test_user_parts_are_hashed_and_never_collide() -> None:
    spaced, underscored = keys.key("q", "a b"), keys.key("q", "a_b")
    assert underscored == "tasklist:3:q:a_b"
    assert spaced.startswith("tasklist:3:q:~") and " " not in spaced
    assert spaced != underscored


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (("a:b",), ("a", "b")),
        (("~x",), ("x",)),
        (("",), ("~",)),
        (("a" * 64,), ("a" * 65,)),
        (("a" * 200, "b"), ("a" * 200 + ":b",)),
    ],
)
def test_ambiguous_inputs_stay_distinct(left: tuple[str, ...], right: tuple[str, ...]) -> None:
    assert keys.key("n", *left) != keys.key("n", *right)


def test_overflow_collapses_parts_under_250_bytes() -> None:
    many = [f"part{i}" for i in range(100)]
    key = keys.key("n", *many)
    assert len(key.encode()) <= 250
    assert key.startswith("tasklist:3:n:*")
    assert key != keys.key("n", *many[:-1])


def test_schema_version_and_prefix_separate_keys() -> None:
    assert KeyBuilder("a", 1).key("n", "x") != KeyBuilder("a", 2).key("n", "x")
    assert KeyBuilder("a").key("n", "x") != KeyBuilder("b").key("n", "x")


@pytest.mark.parametrize("bad", ["", "has space", "x" * 65, "col:on", "ünï"])
def test_kind_and_prefix_must_be_plain(bad: str) -> None:
    with pytest.raises(ValueError):
        keys.key(bad)
    with pytest.raises(ValueError):
        KeyBuilder(bad)


@pytest.mark.parametrize("part", [None, 1.5, b"x", ("a",), True])
def test_only_str_and_int_parts(part: object) -> None:
    with pytest.raises(TypeError):
        keys.key("n", part)


def test_kind_of() -> None:
    assert kind_of(keys.key("tasks", "x y")) == "tasks"
    assert kind_of("foreign") == "-"


@pytest.mark.parametrize("bad", ["", "a b", "a\nb", "a\x7f", "é", "x" * 251])
def test_validate_key_rejects_what_memcached_cannot_carry(bad: str) -> None:
    with pytest.raises(InvalidKey):
        validate_key(bad)


def test_validate_key_accepts_250_bytes() -> None:
    assert validate_key("x" * 250) == b"x" * 250


def test_keys_are_the_keys_key_builds_one_by_one() -> None:
    ids = [1, 42, 2**63 - 1, -5, 0]
    for parts in (("tasks/_notes.html",), ("page", 3), ("x" * 240,), ()):
        assert keys.keys("fragment", parts, ids) == [
            keys.key("fragment", *parts, n) for n in ids
        ]
    with pytest.raises(TypeError):
        keys.keys("fragment", ("a",), [True])

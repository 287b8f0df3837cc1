"""Server-side sessions in the cache, on the in-process cache and a real memcached."""

from collections import defaultdict
from http.cookies import SimpleCookie
from typing import Any

import pytest
from itsdangerous import TimestampSigner
from quart import Quart, Response, flash, redirect, render_template_string, session
from quart.typing import ResponseReturnValue

from app.cache import CacheClient, KeyBuilder
from app.webcache.sessions import CacheSessionInterface, has_session_cookie
from tests.integration.cache.support import MakeBackend, counted
from tests.support.memcached import MemcachedProcess

COOKIE = "session"
PAGE = "{% for m in get_flashed_messages() %}<p>{{ m }}</p>{% endfor %}page"


def make_app(cache_client: CacheClient | None, *, secure: bool = True) -> Quart:
    app = Quart(__name__)
    app.config.update(
        SECRET_KEY="test secret",
        SESSION_COOKIE_NAME=COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure,
    )
    # Quart annotates `session_interface` as its own cookie interface, not the base class
    app.session_interface = CacheSessionInterface(lambda app: cache_client)  # type: ignore[assignment]

    @app.get("/")
    async def page() -> str:
        return await render_template_string(PAGE)

    @app.get("/plain")
    async def plain() -> str:
        return "plain"

    @app.post("/flash")
    async def post_flash() -> ResponseReturnValue:
        await flash("Task name is required.")
        return redirect("/", 303)

    @app.get("/user")
    async def user() -> str:
        name: str = session.get("user", "-")
        return name

    @app.post("/login")
    async def login() -> str:
        session["user"] = "ada"
        return "ok"

    @app.post("/logout")
    async def logout() -> str:
        session.clear()
        return "bye"

    return app


def set_cookies(response: Response) -> dict[str, str]:
    """The Set-Cookie headers of `response` by cookie name (the whole header line)."""
    return {
        line.split("=", 1)[0]: line for line in response.headers.getlist("Set-Cookie")
    }


def session_counts(cache_client: CacheClient) -> dict[str, int]:
    return cache_client.counters.snapshot()["kinds"].get("session", defaultdict(int))


@pytest.fixture
def stored_keys(cache_client: CacheClient, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys the session interface wrote (the real client still stores them)."""
    keys: list[str] = []
    real = cache_client.set

    async def set_(key: str, *args: Any, **kwargs: Any) -> bool:
        keys.append(key)
        return await real(key, *args, **kwargs)

    monkeypatch.setattr(cache_client, "set", set_)
    return keys


async def test_reader_gets_no_cookie_and_nothing_is_written(cache_client: CacheClient) -> None:
    app = make_app(cache_client)
    http = app.test_client()

    for path in ("/", "/plain", "/user"):
        response = await http.get(path)
        assert response.status_code == 200
        assert "Set-Cookie" not in response.headers

    assert counted(cache_client, "sets") == 0
    assert session_counts(cache_client)["misses"] == 0  # no cookie: the cache is not even read


async def test_flash_survives_the_redirect_shows_once_then_session_is_gone(
    cache_client: CacheClient, stored_keys: list[str]
) -> None:
    app = make_app(cache_client)
    http = app.test_client()

    response = await http.post("/flash")
    assert response.status_code == 303
    assert COOKIE in set_cookies(response)
    [key] = stored_keys
    assert await cache_client.get(key) is not None

    response = await http.get("/")
    assert "<p>Task name is required.</p>" in await response.get_data(as_text=True)
    deletion = set_cookies(response)[COOKIE]
    assert "Expires=Thu, 01 Jan 1970" in deletion or "Max-Age=0" in deletion
    assert await cache_client.get(key) is None

    response = await http.get("/")
    assert await response.get_data(as_text=True) == "page"
    assert "Set-Cookie" not in response.headers
    assert stored_keys == [key]


async def test_cookie_flags_and_content(cache_client: CacheClient) -> None:
    response = await make_app(cache_client).test_client().post("/flash")
    header = set_cookies(response)[COOKIE]
    assert "HttpOnly" in header
    assert "SameSite=Lax" in header
    assert "Secure" in header
    assert "Path=/" in header
    value = SimpleCookie(header)[COOKIE].value
    assert "Task" not in value and "required" not in value  # only a signed id

    response = await make_app(cache_client, secure=False).test_client().post("/flash")
    assert "Secure" not in set_cookies(response)[COOKIE]


async def test_session_keeps_data_across_requests_until_cleared(cache_client: CacheClient) -> None:
    http = make_app(cache_client).test_client()

    await http.post("/login")
    response = await http.get("/user")
    assert await response.get_data(as_text=True) == "ada"
    assert "Set-Cookie" not in response.headers  # reading does not rewrite it

    response = await http.post("/logout")
    assert COOKIE in set_cookies(response)
    assert await (await http.get("/user")).get_data(as_text=True) == "-"


@pytest.mark.parametrize("cookie", [
    "garbage",
    "",
    "a.b.c",
    TimestampSigner("another secret", salt="tasklist-session-id").sign("x" * 43).decode(),
])
async def test_forged_or_garbled_cookie_is_no_session(
    cache_client: CacheClient, cookie: str
) -> None:
    http = make_app(cache_client).test_client()
    http.set_cookie("localhost", COOKIE, cookie)

    response = await http.get("/user")

    assert response.status_code == 200
    assert await response.get_data(as_text=True) == "-"
    assert session_counts(cache_client)["misses"] == 0  # not even looked up


async def test_forged_cookie_cannot_read_another_session(cache_client: CacheClient) -> None:
    victim = make_app(cache_client).test_client()
    await victim.post("/login")
    assert victim.cookie_jar is not None
    [stolen] = [cookie.value for cookie in victim.cookie_jar if cookie.name == COOKIE]
    assert stolen is not None
    signed_id = stolen.split(".")[0]

    attacker = make_app(cache_client).test_client()
    attacker.set_cookie("localhost", COOKIE, signed_id + ".forgedsignature.AAAA")

    assert await (await attacker.get("/user")).get_data(as_text=True) == "-"


async def test_cookie_whose_data_expired_gives_an_empty_session(
    cache_client: CacheClient, stored_keys: list[str]
) -> None:
    http = make_app(cache_client).test_client()
    await http.post("/login")
    [key] = stored_keys
    await cache_client.delete(key)

    response = await http.get("/user")

    assert response.status_code == 200
    assert await response.get_data(as_text=True) == "-"
    assert COOKIE in set_cookies(response)  # the dangling cookie is dropped


async def test_without_a_client_sessions_are_empty_and_unsaved() -> None:
    http = make_app(None).test_client()

    response = await http.post("/flash")

    assert response.status_code == 303
    assert "Set-Cookie" not in response.headers
    assert (await http.get("/")).status_code == 200


async def test_cache_down_requests_still_succeed(
    memcached: MemcachedProcess, make_backend: MakeBackend
) -> None:
    cache_client = CacheClient(make_backend([memcached.address]), keys=KeyBuilder("test"))
    http = make_app(cache_client).test_client()
    await http.post("/flash")  # a session exists, then memcached dies

    memcached.kill()
    response = await http.get("/")
    assert response.status_code == 200
    assert await response.get_data(as_text=True) == "page"  # the flash is lost, nothing else

    response = await http.post("/flash")
    assert response.status_code == 303
    assert "Set-Cookie" not in response.headers  # nothing stored, so no cookie naming it
    assert (await http.get("/")).status_code == 200
    await cache_client.close()


@pytest.mark.parametrize(("header", "expected"), [
    (None, False),
    ("", False),
    ("theme=dark", False),
    ("mysession=abc", False),
    ("session=", False),
    ("session=abc.def", True),
    ("theme=dark; session=abc", True),
    ('session="quoted"', True),
])
def test_has_session_cookie(header: str | None, expected: bool) -> None:
    assert has_session_cookie(header, COOKIE) is expected

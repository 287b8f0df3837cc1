"""Server-side sessions in the cache, on the in-process cache and a real memcached."""

from collections import defaultdict
from http.cookies import SimpleCookie

import pytest
from itsdangerous import TimestampSigner
from quart import Quart, flash, redirect, render_template_string, session

from app.cache import CacheClient, KeyBuilder
from app.webcache.sessions import CacheSessionInterface, has_session_cookie

COOKIE = "session"
PAGE = "{% for m in get_flashed_messages() %}<p>{{ m }}</p>{% endfor %}page"


def make_app(client: CacheClient | None, *, secure: bool = True) -> Quart:
    app = Quart(__name__)
    app.config.update(
        SECRET_KEY="test secret",
        SESSION_COOKIE_NAME=COOKIE,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=secure,
    )
    app.session_interface = CacheSessionInterface(lambda app: client)

    @app.get("/")
    async def page():
        return await render_template_string(PAGE)

    @app.get("/plain")
    async def plain():
        return "plain"

    @app.post("/flash")
    async def post_flash():
        await flash("Task name is required.")
        return redirect("/", 303)

    @app.get("/user")
    async def user():
        return session.get("user", "-")

    @app.post("/login")
    async def login():
        session["user"] = "ada"
        return "ok"

    @app.post("/logout")
    async def logout():
        session.clear()
        return "bye"

    return app


def set_cookies(response) -> dict[str, str]:
    """The Set-Cookie headers of `response` by cookie name (the whole header line)."""
    return {
        line.split("=", 1)[0]: line for line in response.headers.getlist("Set-Cookie")
    }


def session_counts(client: CacheClient) -> dict[str, int]:
    return client.counters.snapshot()["namespaces"].get("session", defaultdict(int))


@pytest.fixture
def stored_keys(client, monkeypatch):
    """The keys the session interface wrote (the real client still stores them)."""
    keys: list[str] = []
    real = client.set

    async def set_(key, *args, **kwargs):
        keys.append(key)
        return await real(key, *args, **kwargs)

    monkeypatch.setattr(client, "set", set_)
    return keys


async def test_reader_gets_no_cookie_and_nothing_is_written(client):
    app = make_app(client)
    http = app.test_client()

    for path in ("/", "/plain", "/user"):
        response = await http.get(path)
        assert response.status_code == 200
        assert "Set-Cookie" not in response.headers

    assert client.counters.total("sets") == 0
    assert session_counts(client)["misses"] == 0  # no cookie: the cache is not even read


async def test_flash_survives_the_redirect_shows_once_then_session_is_gone(client, stored_keys):
    app = make_app(client)
    http = app.test_client()

    response = await http.post("/flash")
    assert response.status_code == 303
    assert COOKIE in set_cookies(response)
    [key] = stored_keys
    assert await client.get(key) is not None

    response = await http.get("/")
    assert "<p>Task name is required.</p>" in await response.get_data(as_text=True)
    deletion = set_cookies(response)[COOKIE]
    assert "Expires=Thu, 01 Jan 1970" in deletion or "Max-Age=0" in deletion
    assert await client.get(key) is None

    response = await http.get("/")
    assert await response.get_data(as_text=True) == "page"
    assert "Set-Cookie" not in response.headers
    assert stored_keys == [key]


async def test_cookie_flags_and_content(client):
    response = await make_app(client).test_client().post("/flash")
    header = set_cookies(response)[COOKIE]
    assert "HttpOnly" in header
    assert "SameSite=Lax" in header
    assert "Secure" in header
    assert "Path=/" in header
    value = SimpleCookie(header)[COOKIE].value
    assert "Task" not in value and "required" not in value  # only a signed id

    response = await make_app(client, secure=False).test_client().post("/flash")
    assert "Secure" not in set_cookies(response)[COOKIE]


async def test_session_keeps_data_across_requests_until_cleared(client):
    http = make_app(client).test_client()

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
async def test_forged_or_garbled_cookie_is_no_session(client, cookie):
    http = make_app(client).test_client()
    http.set_cookie("localhost", COOKIE, cookie)

    response = await http.get("/user")

    assert response.status_code == 200
    assert await response.get_data(as_text=True) == "-"
    assert session_counts(client)["misses"] == 0  # not even looked up


async def test_forged_cookie_cannot_read_another_session(client):
    victim = make_app(client).test_client()
    await victim.post("/login")
    [stolen] = [cookie.value for cookie in victim.cookie_jar if cookie.name == COOKIE]
    signed_id = stolen.split(".")[0]

    attacker = make_app(client).test_client()
    attacker.set_cookie("localhost", COOKIE, signed_id + ".forgedsignature.AAAA")

    assert await (await attacker.get("/user")).get_data(as_text=True) == "-"


async def test_cookie_whose_data_expired_gives_an_empty_session(client, stored_keys):
    http = make_app(client).test_client()
    await http.post("/login")
    [key] = stored_keys
    await client.delete(key)

    response = await http.get("/user")

    assert response.status_code == 200
    assert await response.get_data(as_text=True) == "-"
    assert COOKIE in set_cookies(response)  # the dangling cookie is dropped


async def test_without_a_client_sessions_are_empty_and_unsaved():
    http = make_app(None).test_client()

    response = await http.post("/flash")

    assert response.status_code == 303
    assert "Set-Cookie" not in response.headers
    assert (await http.get("/")).status_code == 200


async def test_cache_down_requests_still_succeed(memcached, make_backend):
    client = CacheClient(make_backend([memcached.address]), keys=KeyBuilder("test"))
    http = make_app(client).test_client()
    await http.post("/flash")  # a session exists, then memcached dies

    memcached.kill()
    response = await http.get("/")
    assert response.status_code == 200
    assert await response.get_data(as_text=True) == "page"  # the flash is lost, nothing else

    response = await http.post("/flash")
    assert response.status_code == 303
    assert "Set-Cookie" not in response.headers  # nothing stored, so no cookie naming it
    assert (await http.get("/")).status_code == 200
    await client.close()


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
def test_has_session_cookie(header, expected):
    assert has_session_cookie(header, COOKIE) is expected

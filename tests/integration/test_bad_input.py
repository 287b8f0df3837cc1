"""Hostile bytes the app must refuse cleanly or ignore, never answer with a 500: a Cookie
header that is not UTF-8, form fields that are not UTF-8, bodies over the size limit.

Raw bytes go in two ways: straight into the ASGI app (`tests.support.asgi`; Quart's test
client would encode a header as UTF-8 first) and over a real socket to hypercorn (httpx
refuses to send such a header at all).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from app.cache.sessions import has_session_cookie
from tests.support.asgi import Sent, asgi_request
from tests.support.databases import run_alembic, sqlite_url
from tests.support.servers import LiveServer

BAD_COOKIE = b"session=\xff\xfe"
FORM = (b"content-type", b"application/x-www-form-urlencoded")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """hypercorn serving the app on a SQLite file, its cache in process."""
    directory = tmp_path_factory.mktemp("bad-input")
    url = sqlite_url(directory)
    run_alembic(url, ("upgrade", "head"))
    with LiveServer({"DATABASE_URL": url}, log=directory / "app.log") as server:
        yield server


def raw_request(server: LiveServer, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as it is over a new connection; the status, headers and body."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def get_with_cookie(server: LiveServer, path: str, cookie: bytes) -> tuple[int, dict, bytes]:
    return raw_request(
        server,
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: " + cookie
        + b"\r\nConnection: close\r\n\r\n",
    )


def content_type(sent: Sent) -> str:
    return sent.headers.get(b"content-type", b"").decode()


@pytest.mark.parametrize("path", ["/", "/api/tasks", "/api/tasks/1", "/stats", "/readyz"])
def test_a_cookie_header_that_is_not_utf8_is_no_session_over_http(
    server: LiveServer, path: str
) -> None:
    for _ in range(2):  # the second time, the page may come from the cache
        status, headers, _ = get_with_cookie(server, path, BAD_COOKIE)
        assert status == (404 if path == "/api/tasks/1" else 200), (path, status)
        assert headers.get("x-cache") in (None, "bypass"), "a request with a cookie is cached"
    assert "Traceback" not in server.log_text()


def test_a_form_post_with_a_cookie_that_is_not_utf8_works_over_http(server: LiveServer) -> None:
    body = b"name=cookie+test"
    status, headers, _ = raw_request(
        server,
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: " + BAD_COOKIE
        + b"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body,
    )
    assert status == 303
    assert re.match(r"session=[\w.-]{20,};", headers["set-cookie"]), "a new, valid session"


@pytest.mark.parametrize("path", ["/", "/api/tasks", "/api/tasks/1", "/stats"])
async def test_a_cookie_header_that_is_not_utf8_is_no_session(app: Quart, path: str) -> None:
    for cookie in (BAD_COOKIE, b"other=1; session=\xed\xa0\x80; more=\xc3"):
        sent = await asgi_request(app.asgi_app, "GET", path, headers=[(b"cookie", cookie)])
        assert sent.status == (404 if path == "/api/tasks/1" else 200), (path, sent.status)
        expected = "application/problem+json" if path == "/api/tasks/1" else ""
        assert content_type(sent).startswith(expected)
        # The garbled cookie names no session: the answer deletes it.
        assert sent.headers[b"set-cookie"].startswith(b"session=;")


@pytest.mark.parametrize(
    ("header", "expected"),
    [(b"session=\xff\xfe", True), (b'session="\xed\xa0\x80"', True), (b"other=\xff", False)],
)
def test_the_view_caches_session_check_takes_any_bytes(header: bytes, expected: bool) -> None:
    assert has_session_cookie(header.decode("latin-1"), "session") is expected


# --- form fields that are not UTF-8 ---------------------------------------------------------

NAME_NOT_UTF8 = "Task name is not valid UTF-8 text."
FORM_NOT_UTF8 = "The form is not valid UTF-8 text."
FORM_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}
HX = {**FORM_HEADERS, "HX-Request": "true", "HX-Request-Type": "partial"}
NOT_UTF8_NAMES = [b"name=%FF%FE", b"name=%FF", b"name=%ED%A0%80", b"name=caf%E9", b"name=\xff\xfe"]


async def tasks(client: Client) -> list[dict[str, Any]]:
    return (await (await client.get("/api/tasks")).get_json())["items"]


async def flashed_page(client: Client) -> str:
    return await (await client.get("/")).get_data(as_text=True)


@pytest.mark.parametrize("body", NOT_UTF8_NAMES)
async def test_a_new_task_whose_name_is_not_utf8_is_refused_and_not_stored(
    client: Client, body: bytes
) -> None:
    plain = await client.post("/", data=body, headers=FORM_HEADERS)
    assert plain.status_code == 303
    assert NAME_NOT_UTF8 in await flashed_page(client)

    htmx = await client.post("/", data=body, headers=HX)
    assert htmx.status_code == 422
    fragment = await htmx.get_data(as_text=True)
    assert 'id="new-task"' in fragment and NAME_NOT_UTF8 in fragment
    assert "\ufffd" not in fragment
    assert await tasks(client) == []


@pytest.mark.parametrize("body", NOT_UTF8_NAMES)
async def test_a_rename_to_a_name_that_is_not_utf8_is_refused_and_changes_nothing(
    client: Client, body: bytes
) -> None:
    task = await (await client.post("/api/tasks", json={"name": "kept"})).get_json()
    plain = await client.post(f"/{task['id']}/rename", data=body, headers=FORM_HEADERS)
    assert plain.status_code == 303
    assert NAME_NOT_UTF8 in await flashed_page(client)

    htmx = await client.post(f"/{task['id']}/rename", data=body, headers=HX)
    assert htmx.status_code == 422
    fragment = await htmx.get_data(as_text=True)
    assert NAME_NOT_UTF8 in fragment and 'value="kept"' in fragment
    assert [t["name"] for t in await tasks(client)] == ["kept"]


@pytest.mark.parametrize("action", ["complete", "delete"])
@pytest.mark.parametrize("body", [b"done=%FF", b"done=1&x=%ED%A0%80", b"\xff=1"])
async def test_a_complete_or_delete_form_that_is_not_utf8_is_400_and_changes_nothing(
    client: Client, action: str, body: bytes
) -> None:
    task = await (await client.post("/api/tasks", json={"name": "kept"})).get_json()
    for headers in (FORM_HEADERS, HX):
        response = await client.post(f"/{task['id']}/{action}", data=body, headers=headers)
        assert response.status_code == 400
        assert response.mimetype == "text/html"
        assert FORM_NOT_UTF8 in await response.get_data(as_text=True)
    assert await tasks(client) == [task]


async def test_a_utf8_name_in_a_form_is_stored_as_sent(client: Client) -> None:
    """The strict parsing still takes every valid form: escapes, raw UTF-8 and '+'."""
    body = "name=caf%C3%A9+na\u00efve+%F0%9F%93%9D".encode()
    assert (await client.post("/", data=body, headers=FORM_HEADERS)).status_code == 303
    assert [t["name"] for t in await tasks(client)] == ["café naïve 📝"]


async def test_a_form_in_another_encoding_is_415_and_changes_nothing(client: Client) -> None:
    body = b'--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n--b--\r\n'
    headers = {"Content-Type": "multipart/form-data; boundary=b"}
    response = await client.post("/", data=body, headers=headers)
    assert response.status_code == 415
    assert "application/x-www-form-urlencoded" in await response.get_data(as_text=True)
    assert await tasks(client) == []

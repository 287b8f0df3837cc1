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

import pytest
from quart import Quart

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

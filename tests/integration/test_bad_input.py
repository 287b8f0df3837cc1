"""Hostile bytes the app must refuse cleanly or ignore, never answer with a 500: a Cookie
header that is not UTF-8, form fields that are not UTF-8, bodies over the size limit.

Raw bytes go in two ways: straight into the ASGI app (`tests.support.asgi`; Quart's test
client would encode a header as UTF-8 first) and over a real socket to hypercorn (httpx
refuses to send such a header at all).
"""

from __future__ import annotations

import re
import select
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from app import create_app
from app.settings import Settings
from app.webcache.sessions import has_session_cookie
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


def get_with_cookie(
    server: LiveServer, path: str, cookie: bytes
) -> tuple[int, dict[str, str], bytes]:
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
    for _ in range(2):  # and again: a request with a cookie is never served from the cache
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
    items: list[dict[str, Any]] = (await (await client.get("/api/tasks")).get_json())["items"]
    return items


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


# --- bodies over the size limit --------------------------------------------------------------

LIMIT = Settings().max_body_bytes
TOO_LARGE = f"The request body is larger than {LIMIT:,} bytes"
ROUTES = [
    ("POST", "/", FORM),
    ("POST", "/{id}/rename", FORM),
    ("POST", "/{id}/complete", FORM),
    ("POST", "/{id}/notes", FORM),
    ("POST", "/{id}/delete", FORM),
    ("POST", "/api/tasks", (b"content-type", b"application/json")),
    ("PATCH", "/api/tasks/{id}", (b"content-type", b"application/json")),
    ("DELETE", "/api/tasks/{id}", None),
    ("GET", "/", None),
    ("GET", "/api/tasks", None),
    ("GET", "/api/tasks/{id}", None),
    ("GET", "/stats", None),
    ("GET", "/api/stats", None),
    ("GET", "/healthz", None),
    ("GET", "/readyz", None),
]


@pytest.fixture
async def sqlite_app(sqlite_database: str) -> AsyncIterator[Quart]:
    """The app on SQLite only: the body limit does not depend on the database."""
    app = create_app(Settings(write_rate_limit=0, env="development", database_url=sqlite_database))
    async with app.test_app():
        yield app


@pytest.mark.parametrize("framing", ["content-length", "transfer-encoding"])
@pytest.mark.parametrize(
    ("method", "path", "header"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES]
)
async def test_a_body_over_the_limit_is_413_on_every_route_and_changes_nothing(
    sqlite_app: Quart, method: str, path: str, header: tuple[bytes, bytes] | None,
    framing: str,
) -> None:
    client = sqlite_app.test_client()
    task = await (await client.post("/api/tasks", json={"name": "kept"})).get_json()
    for _ in range(2 if method == "GET" else 0):  # in the cache: not to be served from it
        assert (await client.get(path.format(id=task["id"]))).status_code == 200
    body = b"name=x&" + b"x" * (4 * LIMIT)
    length = str(len(body)).encode() if framing == "content-length" else b"chunked"
    headers = [*([header] if header else []), (framing.encode(), length)]

    target = path.format(id=task["id"])
    sent = await asgi_request(sqlite_app.asgi_app, method, target, headers, body)
    assert sent.status == 413
    expected = "application/problem+json" if path.startswith("/api") else "text/html"
    assert content_type(sent).startswith(expected)
    assert TOO_LARGE in sent.body.decode()
    assert await tasks(client) == [task]


async def test_an_htmx_delete_over_the_limit_is_413_with_a_flash(sqlite_app: Quart) -> None:
    client = sqlite_app.test_client()
    task = await (await client.post("/api/tasks", json={"name": "kept"})).get_json()
    htmx = [(b"hx-request", b"true"), (b"hx-request-type", b"partial"), FORM]
    sent = await asgi_request(
        sqlite_app.asgi_app, "POST", f"/{task['id']}/delete", htmx, b"x" * (LIMIT + 1)
    )
    assert sent.status == 413
    assert sent.headers[b"hx-retarget"] == b"#flashes"
    assert TOO_LARGE in sent.body.decode()
    assert await tasks(client) == [task]


def send_large(server: LiveServer, head: bytes, body: bytes) -> tuple[int, bytes, int]:
    """Send `head`, then `body` until the server answers: its status, what it said, and
    how much of the body had gone out by then."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        sent, received = 0, b""
        while True:
            sending = [sock] if sent < len(body) and not received else []
            readable, writable, _ = select.select([sock], sending, [], 10)
            assert readable or writable, "no answer within 10 s"
            if readable:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
            elif writable:
                try:
                    sent += sock.send(body[sent:sent + 65536])
                except (BrokenPipeError, ConnectionResetError):
                    break
    status_line, _, rest = received.partition(b"\r\n")
    return int(status_line.split()[1]), rest, sent


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_20_mb_delete_is_413_over_http_and_deletes_nothing(
    server: LiveServer, chunked: bool
) -> None:
    created = raw_request(
        server,
        b'POST /api/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n'
        b'Content-Length: 16\r\nConnection: close\r\n\r\n{"name": "kept"}',
    )
    found = re.search(rb'"id":(\d+)', created[2])
    assert found is not None, created
    task_id = found.group(1)
    body = b"x" * (20 * 1024 * 1024)
    if chunked:
        framing = b"Transfer-Encoding: chunked"
        step = 1024 * 1024
        body = b"".join(
            b"%x\r\n%s\r\n" % (step, body[i:i + step]) for i in range(0, len(body), step)
        ) + b"0\r\n\r\n"
    else:
        framing = b"Content-Length: %d" % len(body)
    head = (
        b"POST /" + task_id + b"/delete HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n" + framing
        + b"\r\nConnection: close\r\n\r\n"
    )
    status, answer, sent = send_large(server, head, body)
    assert status == 413
    assert TOO_LARGE.encode() in answer
    # Refused on the way in: neither waited for nor buffered whole.
    assert sent < len(body) // 2, f"answered after {sent:,} of {len(body):,} bytes"
    status, _, _ = raw_request(
        server, b"GET /api/tasks/" + task_id + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert status == 200, "the task was deleted"

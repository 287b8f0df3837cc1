"""Hostile input against the app as served (hypercorn with hypercorn.toml, PostgreSQL,
memcached), over raw sockets so that any byte goes out as it is (httpx refuses to send
most of these).

Every request here is refused with a 4xx and a message saying why (hypercorn's own 4xx,
with an empty body, for what never reaches the app: a head over its limits, a raw non-ASCII
request line), or ignored where that is the right answer (a cookie that is not UTF-8 names
no session). None is a 5xx or a hang, none stores or changes anything (checked in the
database), and the app answers normally afterwards. A stalled body is dropped within the
read timeout: `test_serve.py` checks that on the production command.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from app.settings import Settings
from tests.support.servers import LiveServer, served_on_postgres

pytestmark = pytest.mark.postgres

LIMIT = Settings().max_body_bytes
OVERSIZE = b"x" * (4 * LIMIT)
ANSWER_TIMEOUT = 10.0  # seconds; longer is a hang
PROBLEM = "application/problem+json"
JSON = b"application/json"
FORM = b"application/x-www-form-urlencoded"
NOT_UTF8 = "The body is not valid UTF-8."
FORM_NOT_UTF8 = "not valid UTF-8"  # "Task name is ..." or "The form is ..."
TOO_LONG = "Task name must be at most 500 characters."
ONE_LINE = "Task name must be one line, without tabs or other control characters."


@dataclass
class Answer:
    status: int | None  # None: the connection closed without an answer
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Site:
    server: LiveServer
    dsn: str
    task_id: int = 0  # the test's own task, which its requests try to change

    @property
    def task_url(self) -> str:
        return f"/api/tasks/{self.task_id}"

    def send(
        self, method: str, target: bytes | str, *, headers: Sequence[bytes] = (),
        body: bytes | None = None, chunked: bool = False,
    ) -> Answer:
        """One request on a new connection, written as given."""
        if isinstance(target, str):
            target = target.encode()
        lines = [method.encode() + b" " + target + b" HTTP/1.1", b"Host: 127.0.0.1", *headers]
        if body is not None and chunked:
            lines.append(b"Transfer-Encoding: chunked")
            step = 16 * 1024
            body = b"".join(
                b"%x\r\n%s\r\n" % (len(body[i:i + step]), body[i:i + step])
                for i in range(0, len(body), step)
            ) + b"0\r\n\r\n"
        elif body is not None:
            lines.append(b"Content-Length: %d" % len(body))
        lines.append(b"Connection: close")
        return exchange(self.server.port, b"\r\n".join(lines) + b"\r\n\r\n", body or b"")

    def rows(self) -> list[tuple[int, str, bool]]:
        async def read() -> list[tuple[int, str, bool]]:
            connection = await asyncpg.connect(self.dsn)
            try:
                rows = await connection.fetch("SELECT id, name, done FROM task ORDER BY id")
            finally:
                await connection.close()
            return [(row["id"], row["name"], row["done"]) for row in rows]

        return asyncio.run(read())


def exchange(port: int, head: bytes, body: bytes) -> Answer:
    """Send `head`, then `body` for as long as the server reads it, and read the answer.
    The server may answer (413) before the body is all sent: sending stops there, so its
    answer is read rather than lost to a reset."""
    with socket.create_connection(("127.0.0.1", port), timeout=ANSWER_TIMEOUT) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        sent, received = 0, bytearray()
        deadline = time.monotonic() + ANSWER_TIMEOUT
        while not complete(received):
            if (left := deadline - time.monotonic()) <= 0:
                pytest.fail(f"no answer within {ANSWER_TIMEOUT:.0f} s: {head[:80]!r}")
            sending = sent < len(body) and not received
            readable, writable, _ = select.select([sock], [sock] if sending else [], [], left)
            if readable:
                try:
                    chunk = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                received += chunk
            elif writable:
                try:
                    sent += sock.send(body[sent:sent + 65536])
                except (BrokenPipeError, ConnectionResetError):
                    sent = len(body)
    return parse(bytes(received))


def complete(received: bytes | bytearray) -> bool:
    """Whether `received` holds a whole answer (its head, and the body it announces)."""
    head, found, body = bytes(received).partition(b"\r\n\r\n")
    if not found:
        return False
    if b"transfer-encoding: chunked" in head.lower():
        return body.endswith(b"0\r\n\r\n")
    lengths = [line for line in head.lower().split(b"\r\n") if line.startswith(b"content-length:")]
    return bool(lengths) and len(body) >= int(lengths[0].split(b":")[1])


def parse(received: bytes) -> Answer:
    if not received:
        return Answer(None)
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        body = dechunk(body)
    return Answer(int(status_line.split()[1]), headers, body)


def dechunk(data: bytes) -> bytes:
    out = bytearray()
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2:]
    return bytes(out)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """hypercorn as production configures it (one worker), on PostgreSQL and memcached."""
    with served_on_postgres(tmp_path_factory.mktemp("hostile") / "app.log") as (server, url):
        yield Site(server, make_url(url).set(drivername="postgresql").render_as_string(False))
        assert "Traceback" not in server.log_text(), server.log_text()


def exchange_json(server: LiveServer, method: str, path: str, document: Any) -> Answer:
    body = json.dumps(document).encode()
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return exchange(server.port, head, body)


@pytest.fixture
def unchanged(site: Site) -> Iterator[Site]:
    """A task of the test's own; the test's requests store nothing and change nothing, and
    the app stays healthy."""
    created = exchange_json(site.server, "POST", "/api/tasks", {"name": "the test's task"})
    assert created.status == 201, created
    test_site = replace(site, task_id=created.json()["id"])
    before = site.rows()
    yield test_site
    assert site.rows() == before, "a refused request changed the database"
    assert site.send("GET", "/healthz").status == 200
    fetched = site.send("GET", test_site.task_url)
    assert fetched.status == 200 and fetched.json()["name"] == "the test's task", fetched
    assert site.send("GET", "/").status == 200


def assert_refused(answer: Answer, *statuses: int, says: str | None = None) -> None:
    """A 4xx among `statuses` with a message: problem+json with a `detail` (the API), or a
    page or fragment that names the problem."""
    assert answer.status in statuses, (answer.status, answer.text[:500])
    if answer.headers.get("content-type") == PROBLEM:
        problem = answer.json()
        assert problem["status"] == answer.status and problem["detail"], problem
        if says is not None:
            assert says in problem["detail"], problem
    else:
        assert answer.headers.get("content-type", "").startswith("text/html"), answer.headers
        if says is not None:
            assert says in answer.text, answer.text[:2000]
        else:  # an error page, or (htmx) the flash for #flashes
            assert 'class="error-detail"' in answer.text or "flash-error" in answer.text


def assert_server_refused(answer: Answer, *statuses: int) -> None:
    """A 4xx from hypercorn itself, or the connection closed: never a 5xx."""
    assert answer.status is None or answer.status in statuses, (answer.status, answer.text)


# --- bodies over the limit, on every route --------------------------------------------------

HX = [b"HX-Request: true", b"HX-Request-Type: partial"]
ROUTES = [
    ("POST", "/api/tasks", [b"Content-Type: application/json"]),
    ("PATCH", "/api/tasks/{id}", [b"Content-Type: application/json"]),
    ("DELETE", "/api/tasks/{id}", []),
    ("GET", "/api/tasks", []),
    ("GET", "/api/tasks/{id}", []),
    ("GET", "/api/stats", []),
    ("POST", "/", [b"Content-Type: application/x-www-form-urlencoded"]),
    ("POST", "/{id}/rename", [b"Content-Type: application/x-www-form-urlencoded"]),
    ("POST", "/{id}/complete", [b"Content-Type: application/x-www-form-urlencoded"]),
    ("POST", "/{id}/delete", [b"Content-Type: application/x-www-form-urlencoded"]),
    ("POST", "/{id}/delete", [b"Content-Type: application/x-www-form-urlencoded", *HX]),
    ("GET", "/", []),
    ("GET", "/stats", []),
    ("GET", "/healthz", []),
    ("GET", "/readyz", []),
]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    ("method", "path", "headers"), ROUTES, ids=[f"{m} {p} {len(h)}" for m, p, h in ROUTES]
)
def test_a_body_over_the_limit_is_413_on_every_route(
    unchanged: Site, method: str, path: str, headers: list[bytes], chunked: bool
) -> None:
    target = path.format(id=unchanged.task_id)
    if method == "GET":
        assert unchanged.send("GET", target).status == 200  # now the view cache may hold it
    answer = unchanged.send(method, target, headers=headers, body=OVERSIZE, chunked=chunked)
    assert_refused(answer, 413)


# --- heads over hypercorn's limits --------------------------------------------------------

@pytest.mark.parametrize(
    ("what", "target", "headers"),
    [
        ("one 100 KB header", "/api/tasks", [b"X-Big: " + b"a" * 100_000]),
        ("a 100 KB cookie", "/", [b"Cookie: session=" + b"a" * 100_000]),
        ("a 100 KB URL", "/api/tasks?q=" + "a" * 100_000, []),
        ("a 100 KB path", "/" + "a" * 100_000, []),
        ("a header without a colon", "/api/tasks", [b"NoColonHere"]),
        ("a raw 0xff in the path", b"/api/tasks/\xff", []),
        ("a raw 0xff in the query", b"/api/tasks?limit=\xff", []),
    ],
)
def test_a_head_hypercorn_cannot_take_is_a_4xx_or_closed(
    unchanged: Site, what: str, target: str | bytes, headers: list[bytes]
) -> None:
    for method in ("GET", "POST"):
        answer = unchanged.send(method, target, headers=headers)
        assert_server_refused(answer, 400, 414, 431)


@pytest.mark.parametrize(
    ("what", "target", "headers"),
    [
        ("5,000 small headers", "/api/tasks", [b"X-H%d: v" % n for n in range(5_000)]),
        ("a 10,000-digit id", "/api/tasks/" + "1" * 10_000, []),
        ("a 10 KB query", "/api/tasks?limit=10&q=" + "a" * 10_000, []),
        ("a 0xff byte in a header", "/api/tasks", [b"X-Thing: \xff\xfe"]),
    ],
)
def test_a_large_but_legal_head_is_answered_never_a_5xx(
    unchanged: Site, what: str, target: str, headers: list[bytes]
) -> None:
    answer = unchanged.send("GET", target, headers=headers)
    assert answer.status is None or answer.status < 500, (answer.status, answer.text[:300])
    if answer.status == 404:
        assert_refused(answer, 404)


# --- JSON: deep, huge, odd ----------------------------------------------------------------

def test_json_deeper_than_the_parser_is_400(unchanged: Site) -> None:
    for document in (b"[" * 30_000, b"[" * 30_000 + b"]" * 30_000, b'{"a":' * 12_000):
        for method, target in (("POST", "/api/tasks"), ("PATCH", unchanged.task_url)):
            headers = [b"Content-Type: application/json"]
            answer = unchanged.send(method, target, headers=headers, body=document)
            assert_refused(answer, 400, says="nested too deeply")


@pytest.mark.parametrize(
    ("document", "status"),
    [
        (b"[" * (2 * LIMIT), 413),
        (b'{"name": "x", "pad": [' + b"1," * 30_000 + b"1]}", 422),
        (b'{"name": "x", "' + b"k" * 60_000 + b'": 1}', 422),
        (b'{"name": ' + b"9" * 5_000 + b"}", 400),  # over Python's int digit limit
        (b'{"name": 1e999999}', 422),
        (b'{"name": "x", "done": "true"}', 422),
        (b'{"name": ["a", {"b": null}]}', 422),
        (b"null", 422),
        (b"", 400),
    ],
    ids=["deep-and-over-the-limit", "long-array", "long-key", "huge-int", "huge-float",
         "string-bool", "nested-name", "null", "empty"],
)
def test_huge_or_odd_json_is_refused(unchanged: Site, document: bytes, status: int) -> None:
    headers = [b"Content-Type: application/json"]
    assert_refused(unchanged.send("POST", "/api/tasks", headers=headers, body=document), status)
    patch = unchanged.send("PATCH", unchanged.task_url, headers=headers,
                           body=document)
    # The same fault in a PATCH: "name" is optional there, so a body with only extra or
    # wrong fields is still a 422.
    assert_refused(patch, status)


# --- invalid UTF-8 everywhere ---------------------------------------------------------------

@pytest.mark.parametrize(
    "body", [b'{"name": "\xff\xfe"}', b'{"name": "\xed\xa0\x80"}', b'{"name": "caf\xe9"}']
)
def test_json_that_is_not_utf8_is_400(unchanged: Site, body: bytes) -> None:
    headers = [b"Content-Type: application/json"]
    assert_refused(unchanged.send("POST", "/api/tasks", headers=headers, body=body), 400,
                   says=NOT_UTF8)
    patch = unchanged.send("PATCH", unchanged.task_url, headers=headers, body=body)
    assert_refused(patch, 400, says=NOT_UTF8)


@pytest.mark.parametrize(
    "field", [b"name=%FF%FE", b"name=\xff\xfe", b"name=%ED%A0%80", b"name=caf%E9", b"name=%C3"]
)
@pytest.mark.parametrize("action", ["/", "/{id}/rename"])
def test_a_form_field_that_is_not_utf8_is_refused_with_a_message(
    unchanged: Site, action: str, field: bytes
) -> None:
    target = action.format(id=unchanged.task_id)
    headers = [b"Content-Type: application/x-www-form-urlencoded"]
    htmx = unchanged.send("POST", target, headers=[*headers, *HX], body=field)
    assert_refused(htmx, 400, 422, says=FORM_NOT_UTF8)
    # Without JavaScript: refused too (a 4xx page, or the list with an error flash).
    plain = unchanged.send("POST", target, headers=headers, body=field)
    if plain.status == 303:
        cookie = plain.headers["set-cookie"].split(";", 1)[0].encode()
        page = unchanged.send("GET", "/", headers=[b"Cookie: " + cookie])
        assert 'class="flash flash-error"' in page.text and FORM_NOT_UTF8 in page.text
    else:
        assert_refused(plain, 400, 422, says=FORM_NOT_UTF8)


@pytest.mark.parametrize(
    "target", ["/api/tasks/%FF", "/api/tasks/%ED%A0%80", "/api/%FF", "/%FF/delete"]
)
def test_a_path_that_is_not_utf8_is_404(unchanged: Site, target: str) -> None:
    for method in ("GET", "POST", "DELETE"):
        answer = unchanged.send(method, target)
        assert_refused(answer, 404, 405)


@pytest.mark.parametrize(
    ("target", "status"),
    [("/api/tasks?limit=%FF", 422), ("/api/tasks?offset=%ED%A0%80", 422), ("/?before=%FF", 400)],
)
def test_a_query_that_is_not_utf8_is_refused(unchanged: Site, target: str, status: int) -> None:
    assert_refused(unchanged.send("GET", target), status)


@pytest.mark.parametrize("path", ["/", "/api/tasks", "/api/tasks/{id}", "/stats", "/readyz"])
def test_a_cookie_that_is_not_utf8_names_no_session(unchanged: Site, path: str) -> None:
    target = path.format(id=unchanged.task_id)
    for cookie in (b"Cookie: session=\xff\xfe", b"Cookie: a=1; session=\xed\xa0\x80; b=\xc3"):
        answer = unchanged.send("GET", target, headers=[cookie])
        assert answer.status == 200, (answer.status, answer.text[:300])


# --- names ------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("x" * 10_000, TOO_LONG),
        (" " + "x" * 500, TOO_LONG),
        ("a\x00b", ONE_LINE),
        ("\x1b[31mred\x1b[0m", ONE_LINE),
        ("bell\x07", ONE_LINE),
        ("two\nlines", ONE_LINE),
        ("\tindented", ONE_LINE),
        ("a\u2028b", ONE_LINE),
        ("\u3000 \u00a0", "Task name is required."),
    ],
    ids=["10000-chars", "501-with-a-space", "nul", "ansi-escape", "bell", "newline", "tab",
         "line-separator", "only-spaces"],
)
def test_a_bad_name_is_422_with_a_message_through_the_api_and_the_forms(
    unchanged: Site, name: str, says: str
) -> None:
    for method, target in (("POST", "/api/tasks"), ("PATCH", unchanged.task_url)):
        answer = exchange_json(unchanged.server, method, target, {"name": name})
        assert_refused(answer, 422, says=says)
    form = b"name=" + "".join(f"%{b:02X}" for b in name.encode()).encode()
    headers = [b"Content-Type: application/x-www-form-urlencoded", *HX]
    for target in ("/", f"/{unchanged.task_id}/rename"):
        answer = unchanged.send("POST", target, headers=headers, body=form)
        assert answer.status == 422, (answer.status, answer.text[:300])
        assert says in answer.text

"""The request log in process: the request-id rules, what a line holds whatever ends the
request, and the two formats (tests/integration/test_request_log.py runs it under hypercorn)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from select import PIPE_BUF
from typing import Any

import pytest
from werkzeug.routing import Map

from app import create_app, request_log
from app.request_log import HANDLER, RequestLog, configure_logging, request_id_of
from app.request_metrics import RequestMetrics
from app.settings import LogFormat, Settings
from tests.support.asgi import DictASGIApp, Message, Receive, Send, asgi_request


def counted() -> RequestMetrics:
    return RequestMetrics(Map())


GENERATED_ID = re.compile(r"[0-9a-f]{32}")
LOGFMT_PAIR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')
REQUEST_KEYS = ["time", "level", "logger", "method", "path", "status", "duration_ms", "cache",
                "request_id"]


def parse_logfmt(line: str) -> dict[str, str]:
    """`k=v k="quoted \\" value"` -> dict; fails unless the pairs make up the whole line."""
    pairs = LOGFMT_PAIR.findall(line)
    assert " ".join(f"{k}={v}" for k, v in pairs) == line
    return {k: json.loads(v) if v.startswith('"') else v for k, v in pairs}


@pytest.fixture
def log_output(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """`read = log_output(format)` configures the app's logging in `format`; `read()` then
    returns the lines written to stdout since (parsed, for JSON)."""

    def read(log_format: LogFormat = "json") -> list[Any]:
        HANDLER.flush_lines()  # the request lines it has not written yet
        out = capsys.readouterr().out.splitlines()
        return [json.loads(line) for line in out] if log_format == "json" else out

    def configure(log_format: LogFormat = "json") -> Any:
        configure_logging(log_format)
        capsys.readouterr()
        return lambda: read(log_format)

    yield configure
    configure_logging("plain")  # the default, as every other test's create_app sets it


def responding(status: int = 200, headers: list[tuple[bytes, bytes]] | None = None,
               after: float = 0.0) -> DictASGIApp:
    """An ASGI app that answers `status` with `headers`, then waits `after` seconds."""

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers or []})
        await send({"type": "http.response.body", "body": b"hello", "more_body": False})
        await asyncio.sleep(after)

    return app


@pytest.mark.parametrize(
    "given", [b"abc-123", b"0f9d2c1e-7a4b-4c3d-9e8f-1a2b3c4d5e6f", b"a.b:c_d", b"x" * 128]
)
def test_a_sane_request_id_is_kept(given: bytes) -> None:
    assert request_id_of([(b"host", b"h"), (b"x-request-id", given)]) == given


@pytest.mark.parametrize(
    "given",
    [b"", b"x" * 129, b"has space", b'quote"', b"a=b", b"line\nbreak", b"caf\xc3\xa9", b"tab\t"],
)
def test_an_insane_request_id_is_replaced_by_a_new_one(given: bytes) -> None:
    made = request_id_of([(b"x-request-id", given)])
    assert GENERATED_ID.fullmatch(made.decode())


def test_a_request_without_an_id_gets_a_new_one_each_time() -> None:
    first, second = request_id_of([]), request_id_of([(b"host", b"h")])
    assert GENERATED_ID.fullmatch(first.decode()) and first != second


async def test_a_request_is_logged_once_with_its_outcome_and_id(log_output: Any) -> None:
    read = log_output("json")
    answer = responding(200, [(b"x-cache", b"hit"), (b"content-type", b"text/plain")])
    app = RequestLog(answer, counted())

    sent = await asgi_request(app, "GET", "/tasks?token=s3cret", [(b"x-request-id", b"abc-1")])

    assert sent.headers[b"x-request-id"] == b"abc-1"
    assert sent.headers[b"content-type"] == b"text/plain"
    [line] = read()
    assert list(line) == REQUEST_KEYS
    assert line["level"] == "info" and line["logger"] == "tasklist.request"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert (line["method"], line["path"], line["status"]) == ("GET", "/tasks", 200)
    assert (line["cache"], line["request_id"]) == ("hit", "abc-1")
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert "s3cret" not in json.dumps(line), "the query string is never logged"


async def test_without_x_cache_the_outcome_is_a_dash(log_output: Any) -> None:
    read = log_output("json")
    sent = await asgi_request(RequestLog(responding(404), counted()), "POST", "/x")
    [line] = read()
    assert (line["method"], line["status"], line["cache"]) == ("POST", 404, "-")
    assert line["request_id"] == sent.headers[b"x-request-id"].decode()
    assert GENERATED_ID.fullmatch(line["request_id"])


async def test_the_duration_ends_when_the_client_has_the_response(log_output: Any) -> None:
    """A view-cache miss stores the page after the last body message: not the client's wait."""
    read = log_output("json")
    await asgi_request(RequestLog(responding(after=0.3), counted()), "GET", "/")
    [line] = read()
    assert line["duration_ms"] < 200


async def test_an_app_that_raises_before_answering_is_logged_as_a_500(log_output: Any) -> None:
    read = log_output("json")

    async def broken(scope: Message, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await asgi_request(RequestLog(broken, counted()), "GET", "/", [(b"x-request-id", b"r-500")])
    [line] = read()
    assert (line["status"], line["request_id"]) == (500, "r-500")


async def test_a_client_gone_mid_response_is_logged_once_with_the_status_sent(
    log_output: Any,
) -> None:
    read = log_output("json")
    scope: Message = {"type": "http", "method": "GET", "path": "/", "headers": []}

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.body":
            raise OSError("connection reset")

    with pytest.raises(OSError):
        await RequestLog(responding(200), counted())(scope, receive, send)
    [line] = read()
    assert line["status"] == 200


async def test_lifespan_passes_through_unlogged(log_output: Any) -> None:
    read = log_output("json")
    seen: list[str] = []

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    # No receive or send: a lifespan scope passes through, and the app here calls neither.
    await RequestLog(app, counted())({"type": "lifespan"}, None, None)  # type: ignore[arg-type]
    assert seen == ["lifespan"] and read() == []


async def test_nothing_is_formatted_when_the_request_log_is_off(
    log_output: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    read = log_output("json")
    monkeypatch.setattr(request_log.log, "makeRecord", lambda *a, **k: pytest.fail("a record"))
    request_log.log.setLevel(logging.WARNING)
    try:
        sent = await asgi_request(RequestLog(responding(200), counted()), "GET", "/")
    finally:
        request_log.log.setLevel(logging.NOTSET)
    assert GENERATED_ID.fullmatch(sent.headers[b"x-request-id"].decode()), "still tagged"
    assert read() == []


async def test_logfmt_quotes_what_would_break_a_line(log_output: Any) -> None:
    read = log_output("plain")
    path = '/a b"c=d\\e\nforged=1'
    await asgi_request(RequestLog(responding(200, [(b"x-cache", b"miss")]), counted()), "GET", path,
                       [(b"x-request-id", b"r-1")])
    [line] = read()
    fields = parse_logfmt(line)
    assert list(fields) == REQUEST_KEYS
    assert fields["path"] == path and "forged" not in fields
    assert (fields["status"], fields["cache"], fields["request_id"]) == ("200", "miss", "r-1")
    assert line.startswith("time=") and " method=GET path=" in line


@pytest.mark.parametrize("log_format", ["plain", "json"])
def test_other_records_are_one_line_with_message_and_traceback(
    log_output: Any, log_format: LogFormat
) -> None:
    read = log_output(log_format)
    logger = logging.getLogger("app.cache")
    logger.warning("cache server %s is %s", "mc:11211", "dead")
    try:
        raise ValueError("bad value")
    except ValueError:
        logging.getLogger("tasklist.test").exception("it failed")
    warning, error = read()
    if log_format == "plain":
        warning, error = parse_logfmt(warning), parse_logfmt(error)
    assert {k: warning[k] for k in ("level", "logger", "message")} == {
        "level": "warning", "logger": "app.cache", "message": "cache server mc:11211 is dead"
    }
    assert (error["level"], error["message"]) == ("error", "it failed")
    assert error["exc"].startswith("Traceback") and "ValueError: bad value" in error["exc"]


def test_configuring_twice_keeps_one_handler_in_the_last_format(log_output: Any) -> None:
    read = log_output("plain")
    configure_logging("json")
    configure_logging("json")
    for name in ("tasklist", "app"):
        assert logging.getLogger(name).handlers.count(HANDLER) == 1
    assert logging.getLogger("tasklist").propagate is False
    logging.getLogger("tasklist.request").info("hello")
    [line] = read()
    assert line.startswith('{"time":')  # JSON, though configured as plain first


def test_the_request_log_is_the_outermost_middleware(tmp_path: Path) -> None:
    app = create_app(Settings(write_rate_limit=0, env="development", database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"))
    assert isinstance(app.asgi_app, RequestLog)


class Writes:
    """What the handler writes to stdout, write by write."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Writes]:
    configure_logging("plain")
    HANDLER.flush_lines()
    stream = Writes()
    monkeypatch.setattr(HANDLER, "_write", stream.write)
    yield stream
    HANDLER.flush_lines()


async def test_the_lines_of_requests_that_end_together_share_one_write(writes: Writes) -> None:
    app = RequestLog(responding(), counted())
    await asyncio.gather(*(asgi_request(app, "GET", f"/{n}") for n in range(5)))
    assert writes.writes == [], "held for the others"
    await asyncio.sleep(request_log.FLUSH_DELAY * 2)
    [written] = writes.writes
    assert [line.split(" path=")[1].split()[0] for line in written.splitlines()] == [
        f"/{n}" for n in range(5)
    ]


async def test_a_write_holds_whole_lines_of_at_most_pipe_buf_bytes(writes: Writes) -> None:
    app = RequestLog(responding(), counted())
    paths = [f"/{n}/" + "é" * 300 for n in range(40)]  # 2-byte characters: ~650 bytes a line
    for path in paths:
        await asgi_request(app, "GET", path)
    HANDLER.flush_lines()
    assert len(writes.writes) > 1
    for written in writes.writes:
        assert written.endswith("\n") and len(written.encode()) <= PIPE_BUF
    assert [parse_logfmt(line)["path"] for w in writes.writes for line in w.splitlines()] == paths


async def test_a_record_is_written_after_the_request_lines_before_it(writes: Writes) -> None:
    await asgi_request(RequestLog(responding(), counted()), "GET", "/first")
    logging.getLogger("app.cache").warning("then this")
    assert len(writes.writes) == 2
    assert " path=/first " in writes.writes[0] and "then this" in writes.writes[1]

"""The request log as deployed: `hypercorn 'app:create_app()'` on PostgreSQL and a memcached
that requires authentication, everything real. One line per request on stdout, with the
view cache's outcome and the request id, and no credential anywhere in what the process
writes (stdout and stderr), not even when the database and memcached refuse it."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from tests.support.databases import empty_tables
from tests.support.memcached import MemcachedProcess, free_port
from tests.support.servers import LiveServer
from tests.unit.test_request_log import REQUEST_KEYS, parse_logfmt

pytestmark = pytest.mark.postgres

SECRET_KEY = "sk-LOGTEST-5e3f8c1d2b7a"
MC_USER = "mc-user-LOGTEST-8d1f"
MC_PASSWORD = "mc-pass-LOGTEST-2c9e4b"
DB_PASSWORD = "pg-pass-LOGTEST-7a6b1e"
QUERY_TOKEN = "qs-token-LOGTEST-9f3a"
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def authed_memcached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MemcachedProcess]:
    authfile = tmp_path_factory.mktemp("memcached") / "authfile"
    authfile.write_text(f"{MC_USER}:{MC_PASSWORD}\n")
    server = MemcachedProcess(authfile=authfile).start()
    yield server
    server.kill()


@pytest.fixture
def database_with_password(postgres_url: str) -> str:
    """The run's PostgreSQL database, named with a password (trust auth ignores it)."""
    asyncio.run(empty_tables(postgres_url))
    return with_password(postgres_url)


def with_password(url: str, **changes: Any) -> str:
    return make_url(url).set(password=DB_PASSWORD, **changes).render_as_string(
        hide_password=False
    )


def serve(tmp_path: Path, env: dict[str, str]) -> LiveServer:
    base = {"APP_ENV": "production", "SECRET_KEY": SECRET_KEY, "MEMCACHIER_USERNAME": MC_USER}
    return LiveServer({**base, **env}, log=tmp_path / "server.log")


def request_lines(log: str, parse: Any) -> dict[str, dict[str, Any]]:
    """The request log's lines by request id; an id logged twice fails."""
    found: dict[str, dict[str, Any]] = {}
    for line in log.splitlines():
        fields = parse(line)
        if fields is None or fields.get("logger") != "tasklist.request":
            continue
        assert fields["request_id"] not in found, f"logged twice: {line}"
        found[fields["request_id"]] = fields
    return found


def parse_json(line: str) -> dict[str, Any] | None:
    return json.loads(line) if line.startswith("{") else None


def parse_plain(line: str) -> dict[str, Any] | None:
    return parse_logfmt(line) if line.startswith("time=") else None


def assert_no_secrets(log: str, *also: str) -> None:
    for secret in (SECRET_KEY, MC_USER, MC_PASSWORD, DB_PASSWORD, QUERY_TOKEN, *also):
        assert secret not in log, f"{secret!r} is in the server's output:\n{log}"


def test_json_log_has_one_line_per_request_with_its_outcome_and_no_secret(
    tmp_path: Path, database_with_password: str, authed_memcached: MemcachedProcess
) -> None:
    server = serve(tmp_path, {
        "LOG_FORMAT": "json",
        "DATABASE_URL": database_with_password,
        "MEMCACHIER_SERVERS": authed_memcached.address,
        "MEMCACHIER_PASSWORD": MC_PASSWORD,
    })
    # (method, path, headers, form) -> the status and X-Cache it must get and log
    plan: list[tuple[str, str, dict[str, str], dict[str, str] | None, int, str]] = [
        ("GET", "/", {"X-Request-ID": "req-1.miss"}, None, 200, "miss"),
        ("GET", "/", {"X-Request-ID": "req-2.hit"}, None, 200, "hit"),
        ("POST", "/", {"X-Request-ID": "req-3:post"}, {"name": "log me"}, 303, "-"),
        ("GET", "/no-such-page", {"X-Request-ID": "req-4_404"}, None, 404, "-"),
        ("GET", "/", {"X-Request-ID": "req-5-htmx", "HX-Request": "true"}, None, 200, "miss"),
        ("GET", f"/api/tasks?token={QUERY_TOKEN}", {}, None, 200, "miss"),
        ("GET", "/healthz", {"X-Request-ID": 'bogus id" forged=1'}, None, 200, "-"),
    ]
    sent: list[tuple[str, str, int, str, str]] = []
    cookies: list[str] = []
    with server, httpx.Client(base_url=server.url, follow_redirects=False) as client:
        for method, path, headers, form, status, cache in plan:
            response = client.request(method, path, headers=headers, data=form)
            assert (response.status_code, response.headers.get("x-cache", "-")) == (
                status, cache
            ), response.text
            request_id = response.headers["x-request-id"]
            given = headers.get("X-Request-ID")
            if given is not None and " " not in given:
                assert request_id == given, "a sane id is echoed"
            else:
                assert GENERATED_ID.fullmatch(request_id), "a missing or bogus id is replaced"
            sent.append((request_id, method, status, cache, path.partition("?")[0]))
            cookies += response.cookies.values()
    log = server.log_text(tail=10**7)  # the server has stopped: every line is written

    assert cookies, "the POST set a session cookie"
    lines = request_lines(log, parse_json)
    ours = {request_id for request_id, *_ in sent}
    others = [fields["path"] for request_id, fields in lines.items() if request_id not in ours]
    assert set(others) <= {"/healthz"}, "besides ours, only LiveServer's start-up probes"
    for request_id, method, status, cache, path in sent:
        line = lines[request_id]
        assert list(line) == REQUEST_KEYS
        assert (line["level"], line["method"], line["path"]) == ("info", method, path)
        assert (line["status"], line["cache"]) == (status, cache)
        assert isinstance(line["duration_ms"], float) and 0 <= line["duration_ms"] < 10_000
    assert_no_secrets(log, *cookies)


def test_plain_log_is_logfmt_by_default(
    tmp_path: Path, database_with_password: str, authed_memcached: MemcachedProcess
) -> None:
    server = serve(tmp_path, {
        "LOG_FORMAT": "",  # the default (and no LOG_FORMAT from the caller's environment)
        "DATABASE_URL": database_with_password,
        "MEMCACHIER_SERVERS": authed_memcached.address,
        "MEMCACHIER_PASSWORD": MC_PASSWORD,
    })
    with server, httpx.Client(base_url=server.url) as client:
        outcomes = [
            client.get(path, headers={"X-Request-ID": f"plain-{i}"}).headers.get("x-cache", "-")
            for i, path in enumerate(["/api/tasks", "/api/tasks", "/nope"])
        ]
    log = server.log_text(tail=10**7)

    assert outcomes == ["miss", "hit", "-"]
    lines = request_lines(log, parse_plain)
    for i, (path, status) in enumerate([("/api/tasks", "200"), ("/api/tasks", "200"),
                                        ("/nope", "404")]):
        line = lines[f"plain-{i}"]
        assert list(line) == REQUEST_KEYS
        assert (line["level"], line["method"], line["path"]) == ("info", "GET", path)
        assert (line["status"], line["cache"]) == (status, outcomes[i])
        float(line["duration_ms"])
    assert_no_secrets(log)


def test_failures_are_logged_as_json_lines_without_the_credentials(
    tmp_path: Path, postgres_url: str, authed_memcached: MemcachedProcess
) -> None:
    """The database is unreachable and memcached refuses the password: the warnings say
    so, one JSON line each, and name neither password."""
    wrong_password = "mc-wrong-LOGTEST-4d2a"
    server = serve(tmp_path, {
        "LOG_FORMAT": "json",
        "DATABASE_URL": with_password(postgres_url, port=free_port()),  # nothing listens
        "MEMCACHIER_SERVERS": authed_memcached.address,
        "MEMCACHIER_PASSWORD": wrong_password,
    })
    with server, httpx.Client(base_url=server.url) as client:
        api = client.get("/api/tasks", headers={"X-Request-ID": "down-api"})
        page = client.get("/", headers={"X-Request-ID": "down-page"})
    log = server.log_text(tail=10**7)

    assert (api.status_code, page.status_code) == (503, 503)
    lines = request_lines(log, parse_json)
    assert (lines["down-api"]["status"], lines["down-page"]["status"]) == (503, 503)
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    warnings = [r for r in records if r["level"] == "warning"]
    assert any(r["logger"] == "app.errors" and "database unavailable" in r["message"]
               for r in warnings), log
    assert any(r["logger"] == "app.cache" for r in warnings), log
    assert all(list(r)[:3] == ["time", "level", "logger"] for r in records)
    assert_no_secrets(log, wrong_password)

"""Cross-origin protection without tokens, and the security headers."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from app.security import is_cross_origin
from app.settings import PROJECT_ROOT
from app.web import content_version, static_url

HOST = "localhost"  # what Quart's test client sends as Host


@pytest.mark.parametrize(
    ("method", "headers", "refused"),
    [
        ("POST", {"sec-fetch-site": "cross-site"}, True),
        ("POST", {"sec-fetch-site": "same-site"}, True),
        ("POST", {"sec-fetch-site": "same-origin", "origin": "https://evil.example"}, False),
        ("POST", {"sec-fetch-site": "none"}, False),
        ("POST", {"origin": "https://evil.example"}, True),
        ("POST", {"origin": "null"}, True),
        ("POST", {"origin": f"http://{HOST}"}, False),
        ("POST", {}, False),
        ("DELETE", {"sec-fetch-site": "cross-site"}, True),
        ("GET", {"sec-fetch-site": "cross-site", "origin": "https://evil.example"}, False),
    ],
)
def test_cross_origin_rules(method: str, headers: dict[str, str], refused: bool) -> None:
    assert is_cross_origin(method, headers, HOST) is refused


async def tasks_on_page(client: Client) -> list[str]:
    html = await (await client.get("/")).get_data(as_text=True)
    return re.findall(r'<li id="task-(\d+)"', html)


async def test_cross_site_form_post_is_refused_and_stores_nothing(client: Client) -> None:
    response = await client.post(
        "/", form={"name": "forged"}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert response.status_code == 403
    assert response.mimetype == "text/html"
    assert "Cross-origin requests are not allowed." in await response.get_data(as_text=True)
    assert await tasks_on_page(client) == []


async def test_foreign_origin_without_fetch_metadata_is_refused(client: Client) -> None:
    response = await client.post(
        "/", form={"name": "forged"}, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert await tasks_on_page(client) == []


async def test_same_origin_form_post_is_allowed(client: Client) -> None:
    response = await client.post(
        "/",
        form={"name": "mine"},
        headers={"Sec-Fetch-Site": "same-origin", "Origin": f"http://{HOST}"},
    )
    assert response.status_code == 303
    assert len(await tasks_on_page(client)) == 1


async def test_cross_site_api_write_is_refused_with_problem_json(client: Client) -> None:
    response = await client.post(
        "/api/tasks", json={"name": "forged"}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert response.status_code == 403
    assert response.mimetype == "application/problem+json"
    body = await response.get_json()
    assert body["status"] == 403 and body["instance"] == "/api/tasks"
    listing = await (await client.get("/api/tasks")).get_json()
    assert listing["total"] == 0


async def test_api_client_without_browser_headers_is_allowed(client: Client) -> None:
    response = await client.post("/api/tasks", json={"name": "from curl"})
    assert response.status_code == 201


async def test_api_client_from_the_same_origin_is_allowed(client: Client) -> None:
    response = await client.post(
        "/api/tasks", json={"name": "from the page"}, headers={"Origin": f"http://{HOST}"}
    )
    assert response.status_code == 201


@pytest.mark.parametrize("path", ["/", "/stats", "/api/tasks", "/no/such/page", "/healthz"])
async def test_every_response_has_the_security_headers(client: Client, path: str) -> None:
    response = await client.get(path)
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Referrer-Policy"] == "same-origin"


async def test_static_files_have_the_security_headers_too(client: Client) -> None:
    response = await client.get("/static/css/app.css")
    assert response.status_code == 200
    assert response.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", ["/", "/stats", "/no/such/page"])
async def test_pages_load_nothing_from_another_origin(client: Client, path: str) -> None:
    html = await (await client.get(path)).get_data(as_text=True)
    urls = re.findall(r'(?:src|href|action|hx-get|hx-post)="([^"]*)"', html)
    assert urls, "the page links its own resources"
    foreign = [url for url in urls if not re.match(r"(/(?!/)|#)", url)]
    assert foreign == []
    assert "<script>" not in html and " style=" not in html and "<style" not in html
    assert re.search(r'src="/static/vendor/htmx\.min\.js\?v=\w+"', html)


async def test_pages_served_from_the_view_cache_have_the_security_headers(client: Client) -> None:
    responses = [await client.get("/") for _ in range(2)]
    assert [r.headers.get("X-Cache") for r in responses] == ["miss", "hit"]
    for response in responses:
        assert "default-src 'self'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY"


@pytest.mark.parametrize("path", ["/", "/stats", "/no/such/page"])
async def test_every_static_asset_url_carries_its_content_hash(client: Client, path: str) -> None:
    """So a new htmx or app.css is a new URL: no browser keeps the old one for 12 h."""
    html = await (await client.get(path)).get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="/static/([^"?]+)(?:\?v=(\w+))?"', html)
    assert {name for name, _ in assets} >= {"vendor/htmx.min.js", "css/app.css"}
    for name, version in assets:
        digest = hashlib.sha256((PROJECT_ROOT / "static" / name).read_bytes()).hexdigest()
        assert version and digest.startswith(version), name
        response = await client.get(f"/static/{name}?v={version}")
        assert response.status_code == 200


async def test_static_url_changes_with_the_content_and_is_read_once(
    app: Quart, tmp_path: Path
) -> None:
    asset = tmp_path / "app.css"
    asset.write_text("body { color: black }")
    app.static_folder = str(tmp_path)
    async with app.test_request_context("/"):
        first = static_url("app.css")
        asset.write_text("body { color: navy }")
        assert static_url("app.css") == first, "hashed once per process, not per request"
        content_version.cache_clear()  # a new process, after the deploy
        second = static_url("app.css")
    assert first.startswith("/static/app.css?v=") and second.startswith("/static/app.css?v=")
    assert first != second

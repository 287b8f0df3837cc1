"""The app behind a trusted proxy: every layer sees the client the proxy forwarded, and a
request from anyone else keeps its connection's address, whatever its header says."""

from __future__ import annotations

import pytest
from quart import request

from app import create_app
from app.settings import Settings, parse_networks

PROXY = "10.0.0.5"


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "seen"),
    [
        (PROXY, PROXY, "198.51.100.1, 203.0.113.7", "203.0.113.7"),
        (PROXY, "203.0.113.50", "198.51.100.1", "203.0.113.50"),  # spoofed: not the proxy
        (PROXY, PROXY, None, PROXY),
        ("", PROXY, "198.51.100.1", PROXY),  # no proxy trusted: the header is ignored
    ],
)
async def test_the_app_sees_the_client_its_trusted_proxy_forwarded(
    sqlite_database: str, trusted: str, peer: str, forwarded: str | None, seen: str
) -> None:
    settings = Settings(
        env="development", database_url=sqlite_database,
        forwarded_allow_ips=parse_networks(trusted),
    )
    app = create_app(settings)

    @app.get("/client")
    async def client() -> str:
        return request.remote_addr or ""

    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    async with app.test_app():
        response = await app.test_client().get(
            "/client", headers=headers, scope_base={"client": (peer, 1234)}
        )
        assert await response.get_data(as_text=True) == seen

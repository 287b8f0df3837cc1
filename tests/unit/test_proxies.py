"""Whose `X-Forwarded-For` is believed, and which of its entries is the client."""

from __future__ import annotations

import pytest

from app.proxies import forwarded_client
from app.settings import Networks, SettingsError, parse_networks

PROXY = parse_networks("10.0.0.5")
CHAIN = parse_networks("10.0.0.5, 172.16.0.0/12")


@pytest.mark.parametrize(
    ("peer", "header", "trusted", "client"),
    [
        # The proxy appends the address it saw: the last entry is the client.
        ("10.0.0.5", ["203.0.113.7"], PROXY, "203.0.113.7"),
        # What the client sent itself sits further left and is not believed.
        ("10.0.0.5", ["1.2.3.4, 203.0.113.7"], PROXY, "203.0.113.7"),
        ("10.0.0.5", ["1.2.3.4", "203.0.113.7"], PROXY, "203.0.113.7"),  # two header lines
        # Through two trusted proxies: the first untrusted hop from the right.
        ("10.0.0.5", ["1.2.3.4, 203.0.113.7, 172.20.0.3"], CHAIN, "203.0.113.7"),
        # Proxies all the way: the leftmost.
        ("10.0.0.5", ["172.20.0.9, 172.20.0.3"], CHAIN, "172.20.0.9"),
        ("::ffff:10.0.0.5", ["2001:db8::1"], PROXY, "2001:db8::1"),  # a dual-stack socket
        ("10.0.0.5", [" 203.0.113.7 "], PROXY, "203.0.113.7"),
        # From anyone else, the header changes nothing.
        ("203.0.113.50", ["1.2.3.4"], PROXY, None),
        ("127.0.0.1", ["1.2.3.4"], PROXY, None),
        ("10.0.0.5", ["1.2.3.4"], (), None),  # no proxy trusted at all
        # A trusted proxy with no header, or garbage where the client should be.
        ("10.0.0.5", [], PROXY, None),
        ("10.0.0.5", ["1.2.3.4, not-an-address"], PROXY, None),
        ("10.0.0.5", ["unknown"], PROXY, None),
        ("10.0.0.5", [""], PROXY, None),
        ("not-an-address", ["1.2.3.4"], PROXY, None),
    ],
)
def test_the_client_is_the_address_the_outermost_trusted_proxy_saw(
    peer: str, header: list[str], trusted: Networks, client: str | None
) -> None:
    forwarded = [line.encode("latin-1") for line in header]
    assert forwarded_client(peer, forwarded, trusted) == client


def test_trusted_proxies_are_addresses_networks_or_everyone() -> None:
    assert [str(n) for n in parse_networks(" 10.0.0.5 , 172.29.87.0/24,,")] == [
        "10.0.0.5/32", "172.29.87.0/24",
    ]
    assert [str(n) for n in parse_networks("*")] == ["0.0.0.0/0", "::/0"]
    assert parse_networks("") == ()


@pytest.mark.parametrize("value", ["10.0.0.300", "172.29.87.1/24", "proxy.internal"])
def test_a_malformed_proxy_names_the_setting(value: str) -> None:
    with pytest.raises(SettingsError, match=r"FORWARDED_ALLOW_IPS: .* is not an IP address"):
        parse_networks(value)

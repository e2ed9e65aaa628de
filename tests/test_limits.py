"""The guard's decisions on their own: client addresses behind trusted proxies, origins,
connection counts, and the connect-rate table (on a clock of the test's own, so that
pruning is checked exactly)."""

from __future__ import annotations

import ipaddress

import pytest

from roomcast.exceptions import ConfigError
from roomcast.limits import (
    Connections,
    ConnectRate,
    OriginPolicy,
    TrustedProxies,
    limit_key,
    parse_address,
    retry_after,
)

PROXIES = TrustedProxies(["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),  # not a proxy: XFF ignored
        ("10.1.2.3", ["198.51.100.1"], "198.51.100.1"),
        ("10.1.2.3", [], "10.1.2.3"),  # a proxy that names nobody
        ("10.1.2.3", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),  # forged left part
        ("10.1.2.3", ["198.51.100.1, 10.9.9.9, 192.0.2.1"], "198.51.100.1"),  # a chain
        ("10.1.2.3", ["198.51.100.1", "10.9.9.9"], "198.51.100.1"),  # two header lines
        ("10.1.2.3", ["198.51.100.1, garbage"], "10.1.2.3"),  # stops at the last good one
        ("10.1.2.3", ["10.4.4.4, 10.5.5.5"], "10.4.4.4"),  # all proxies: the farthest
        ("10.1.2.3", [" 198.51.100.1:5678 "], "198.51.100.1"),
        ("10.1.2.3", ["[2001:db9::1]:80"], "2001:db9::1"),
        ("::ffff:10.1.2.3", ["198.51.100.1"], "198.51.100.1"),  # IPv4-mapped peer
        ("2001:db8::5", ["198.51.100.1"], "198.51.100.1"),
    ],
)
def test_client_address(peer: str, forwarded: list[str], client: str) -> None:
    assert PROXIES.client(peer, forwarded) == ipaddress.ip_address(client)


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert TrustedProxies([]).client("10.1.2.3", ["198.51.100.1"]) == parse_address("10.1.2.3")
    assert TrustedProxies([]).client(None, ["198.51.100.1"]) is None


def test_a_bad_trusted_proxy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="'nginx' is not an address or a network"):
        TrustedProxies(["10.0.0.1", "nginx"])


def test_limit_keys_count_an_ipv6_client_by_its_64() -> None:
    assert limit_key(parse_address("198.51.100.1")) == "198.51.100.1"
    assert limit_key(parse_address("2001:db8:1:2:aaaa::1")) == "2001:db8:1:2::/64"
    assert limit_key(parse_address("2001:db8:1:2:bbbb::9")) == "2001:db8:1:2::/64"
    assert limit_key(None) == "unknown"


@pytest.mark.parametrize(
    ("origin", "host", "allowed"),
    [
        (None, "chat.example.com", True),  # not a browser
        ("https://chat.example.com", "chat.example.com", True),
        ("https://Chat.Example.com", "chat.example.COM", True),
        ("http://chat.example.com", "chat.example.com", True),
        ("https://chat.example.com", "chat.example.com:443", True),
        ("https://chat.example.com", "chat.example.com:80", False),
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("http://127.0.0.1:8000", "127.0.0.1:8001", False),
        ("http://127.0.0.1:8000", "127.0.0.1", False),
        ("http://localhost:8000", "127.0.0.1:8000", False),
        ("http://[::1]:8000", "[::1]:8000", True),
        ("https://evil.example", "chat.example.com", False),
        ("https://chat.example.com.evil.example", "chat.example.com", False),
        ("https://x@chat.example.com", "chat.example.com", False),
        ("https://chat.example.com/path", "chat.example.com", False),
        ("ftp://chat.example.com", "chat.example.com", False),
        ("https://chat.example.com:99999", "chat.example.com", False),
        ("null", "chat.example.com", False),
        ("https://chat.example.com", None, False),
    ],
)
def test_same_origin_by_default(origin: str | None, host: str | None, allowed: bool) -> None:
    assert (OriginPolicy([]).refusal(origin, host) is None) is allowed


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("https://a.b.example.com", True),
        ("https://example.com", False),
        ("http://app.example.com", False),
        ("https://chat.internal", False),  # the server's own origin: not listed
        ("capacitor://localhost", True),
        ("null", False),
    ],
)
def test_allowed_origin_patterns(origin: str, allowed: bool) -> None:
    policy = OriginPolicy(["https://*.example.com/", "capacitor://localhost"])
    assert (policy.refusal(origin, "chat.internal") is None) is allowed


def test_any_origin_and_null() -> None:
    assert OriginPolicy(["*"]).refusal("null", "h") is None
    assert OriginPolicy(["*"]).refusal("https://evil.example", "h") is None
    assert OriginPolicy(["n*"]).refusal("null", "h") is not None


def test_a_refusal_names_the_origin_and_what_is_allowed() -> None:
    assert OriginPolicy([]).refusal("https://evil.example", "h") == (
        "origin 'https://evil.example' may not connect (allowed: this server's own "
        "origin; see --allowed-origins)"
    )
    long = "https://" + "a" * 1000 + ".example"
    message = OriginPolicy(["https://x.example"]).refusal(long, "h")
    assert message is not None
    assert len(message) < 300
    assert "https://x.example" in message


def test_connections_per_key_and_in_all() -> None:
    connections = Connections(total_limit=3, per_key_limit=2)
    connections.acquire("a")
    connections.acquire("a")
    assert (connections.full(), connections.full_for("a"), connections.full_for("b")) == (
        False, True, False,
    )  # fmt: skip
    connections.acquire("b")
    assert connections.full()
    connections.release("a")
    connections.release("a")
    assert (connections.full(), connections.full_for("a"), connections.by_key) == (
        False, False, {"b": 1},
    )  # fmt: skip
    assert not Connections(0, 0).full_for("x")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_connect_rate_burst_then_rate() -> None:
    clock = Clock()
    rate = ConnectRate(2.0, 3, clock=clock)
    assert [rate.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rate.take("a") == pytest.approx(0.5)
    assert rate.take("b") == 0.0  # another client has a bucket of its own
    clock.now += 0.5
    assert rate.take("a") == 0.0
    assert rate.take("a") == pytest.approx(0.5)
    assert ConnectRate(0.0, 1).take("a") == 0.0  # no limit


def test_idle_buckets_are_pruned() -> None:
    clock = Clock()
    rate = ConnectRate(10.0, 5, clock=clock)  # a bucket is full again after 0.5 s
    for n in range(1000):
        rate.take(f"client-{n}")
    assert len(rate) == 1000
    clock.now += 0.4
    rate.take("late")
    assert len(rate) == 1001  # not idle long enough yet
    clock.now += 0.1
    rate.take("later")
    assert len(rate) == 2  # "late" and "later"
    clock.now += 1.0
    rate.take("late")
    assert len(rate) == 1


def test_the_table_never_holds_more_than_max_keys() -> None:
    rate = ConnectRate(1.0, 5, max_keys=100, clock=Clock())
    for n in range(1000):
        rate.take(f"client-{n}")
    assert len(rate) == 100


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert [retry_after(s) for s in (0.0, 0.01, 1.0, 1.2, 5)] == ["1", "1", "1", "2", "5"]

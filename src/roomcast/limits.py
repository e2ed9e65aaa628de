"""What the guard of the client endpoints decides with (no aiohttp here): who a client
is behind trusted proxies, whether its page's origin may connect, how many connections
it holds and how fast it opens new ones (docs/security.md)."""

from __future__ import annotations

import fnmatch
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Final
from urllib.parse import urlsplit

from roomcast.exceptions import ConfigError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

IPV6_PREFIX: Final = 64  # one IPv6 client: its /64 (a host gets a whole /64 for free)
DEFAULT_PORTS: Final = {"http": 80, "https": 443}
MAX_SHOWN: Final = 200  # characters of a refused origin quoted in the error message


def parse_address(text: str) -> Address | None:
    """An address of X-Forwarded-For or a peer: ``1.2.3.4``, ``1.2.3.4:5678``, ``::1``,
    ``[::1]:5678``; an IPv4-mapped IPv6 address is its IPv4 one. None if it is none."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The proxies whose ``X-Forwarded-For`` is believed (``--trusted-proxies``)."""

    __slots__ = ("networks",)

    def __init__(self, entries: Iterable[str]) -> None:
        networks: list[Network] = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ConfigError(
                    f"--trusted-proxies: {entry!r} is not an address or a network"
                ) from None
        self.networks = tuple(networks)

    def __contains__(self, address: Address) -> bool:
        return any(address in network for network in self.networks)

    def client(self, peer: str | None, forwarded: Iterable[str]) -> Address | None:
        """The client's address: the peer's, or when the peer is a trusted proxy, the
        right-most address of X-Forwarded-For (every value of the header, in order)
        that is not itself a trusted proxy. An entry that is no address ends the walk
        at the last good one: an untrusted hop could have written anything before it."""
        address = parse_address(peer) if peer else None
        if address is None or not self.networks or address not in self:
            return address
        hops = [hop for value in forwarded for hop in value.split(",")]
        for hop in reversed(hops):
            previous, address = address, parse_address(hop)
            if address is None:
                return previous
            if address not in self:
                return address
        return address


def limit_key(address: Address | None) -> str:
    """What the per-client limits count by: the IPv4 address, the IPv6 /64."""
    if address is None:
        return "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


class OriginPolicy:
    """``--allowed-origins``: ``fnmatch`` patterns (``https://*.example.com``, ``*``);
    none means the server's own origin only."""

    __slots__ = ("any", "patterns")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(p.strip().lower().rstrip("/") for p in patterns if p.strip())
        self.any = "*" in self.patterns

    def refusal(self, origin: str | None, host: str | None) -> str | None:
        """Why a request with these ``Origin`` and ``Host`` headers is refused, or None.
        No ``Origin`` (not a browser) passes; ``null`` passes only ``*``."""
        if origin is None or self.any:
            return None
        value = origin.strip().lower()
        if value != "null":
            if self.patterns:
                if any(fnmatch.fnmatchcase(value, p) for p in self.patterns):
                    return None
            elif same_origin(value, host):
                return None
        shown = origin if len(origin) <= MAX_SHOWN else origin[:MAX_SHOWN] + "..."
        allowed = ", ".join(self.patterns) or "this server's own origin"
        return f"origin {shown!r} may not connect (allowed: {allowed}; see --allowed-origins)"


def same_origin(origin: str, host: str | None) -> bool:
    """Whether ``origin`` (http or https) names ``host``, the request's Host header. A
    Host without a port matches the origin's default one: behind a TLS proxy an
    ``https://host`` page connects to a node that sees ``Host: host``."""
    if host is None:
        return False
    try:
        page, server = urlsplit(origin), urlsplit("//" + host.strip().lower())
        page_port, server_port = page.port, server.port
    except ValueError:
        return False
    default = DEFAULT_PORTS.get(page.scheme)
    if default is None or page.hostname is None or page.path or page.query:
        return False
    if page.username is not None or server.username is not None or server.path:
        return False
    if server.hostname != page.hostname:
        return False
    if page_port is None or page_port == default:
        return server_port is None or server_port == default
    return server_port == page_port


class Connections:
    """The live client connections of the node, in all and per client key."""

    __slots__ = ("by_key", "per_key_limit", "total", "total_limit")

    def __init__(self, total_limit: int, per_key_limit: int) -> None:
        self.total_limit = total_limit  # 0: no limit
        self.per_key_limit = per_key_limit
        self.total = 0
        self.by_key: dict[str, int] = {}

    def full(self) -> bool:
        return 0 < self.total_limit <= self.total

    def full_for(self, key: str) -> bool:
        return 0 < self.per_key_limit <= self.by_key.get(key, 0)

    def acquire(self, key: str) -> None:
        self.total += 1
        self.by_key[key] = self.by_key.get(key, 0) + 1

    def release(self, key: str) -> None:
        self.total -= 1
        left = self.by_key[key] - 1
        if left:
            self.by_key[key] = left
        else:
            del self.by_key[key]


class ConnectRate:
    """A token bucket per client key: ``rate`` new connections a second, ``burst`` at
    once (``--connect-rate``, ``--connect-burst``). A bucket unused for ``burst / rate``
    seconds is full again, the same as no bucket: it is dropped, so the table holds only
    the clients of the last few seconds (and never more than ``max_keys``)."""

    __slots__ = ("_buckets", "_clock", "_idle", "burst", "max_keys", "rate")

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate  # 0: no limit
        self.burst = burst
        self.max_keys = max_keys
        self._clock = clock
        self._idle = burst / rate if rate > 0 else 0.0
        # key -> (tokens, when they were counted), least recently used first
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Spend a token of ``key``: 0.0, or the seconds until it has one."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        self._prune(now)
        tokens, stamp = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - stamp) * self.rate)
        wait = 0.0
        if tokens >= 1:
            tokens -= 1
        else:
            wait = (1 - tokens) / self.rate
        self._buckets[key] = (tokens, now)  # last in the order: the most recently used
        return wait

    def _prune(self, now: float) -> None:
        buckets = self._buckets
        while buckets:
            key, (_, stamp) = next(iter(buckets.items()))
            if now - stamp < self._idle and len(buckets) < self.max_keys:
                return
            del buckets[key]


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))

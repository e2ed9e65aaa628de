"""Redis connections for the broker and the presence store: one Redis server
(``redis://``, ``rediss://``) or a Redis Cluster (``redis+cluster://``,
``rediss+cluster://``).

Neither client retries a command by itself: a publish whose reply was lost may have
run, and running it again would store the message twice. (A cluster client still
follows ``MOVED``, ``ASK`` and ``TRYAGAIN`` redirections: those mean the command did not
run on the node that answered them.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import unquote

from redis import asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, RedisError

from roomcast.exceptions import ConfigError

POOL_SIZE = 64  # connections per node; more commands at once wait for a free one
COMMAND_TIMEOUT = 5.0  # seconds a command (or the wait for a connection) may take
CONNECT_TIMEOUT = 2.0
CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}  # scheme -> TLS
DEFAULT_PORT = 6379

Client = aioredis.Redis | RedisCluster
# What a failed Redis command raises (TimeoutError is an OSError).
REDIS_ERRORS = (RedisError, RedisClusterException, OSError)
T = TypeVar("T")


def is_cluster(url: str) -> bool:
    return url.split("://", 1)[0] in CLUSTER_SCHEMES


@dataclass(frozen=True, slots=True)
class ClusterURL:
    """``redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT...]``: the nodes to learn
    the cluster from (any one that answers will do) and the options of a connection to
    any node (credentials; TLS with ``rediss+cluster://``)."""

    nodes: list[tuple[str, int]]
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, url: str) -> ClusterURL:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme not in CLUSTER_SCHEMES:
            raise ConfigError(f"not a Redis Cluster URL: {url!r}")
        netloc, _, path = rest.partition("/")
        if path not in {"", "0"} or "?" in rest or "#" in rest:
            raise ConfigError(f"{url!r}: a Redis Cluster URL has no database, path or query")
        userinfo, _, hosts = netloc.rpartition("@")
        nodes = [_host_port(url, item.strip()) for item in hosts.split(",")]
        options: dict[str, Any] = {"ssl": True} if CLUSTER_SCHEMES[scheme] else {}
        username, _, password = userinfo.partition(":")
        if username:
            options["username"] = unquote(username)
        if password:
            options["password"] = unquote(password)
        return cls(nodes, options)

    def node_options(self) -> dict[str, Any]:
        """Connection options for one node (auth, TLS, timeouts, no retries)."""
        return {
            **self.options,
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "socket_timeout": COMMAND_TIMEOUT,
            "retry": Retry(NoBackoff(), 0),
        }


def _host_port(url: str, item: str) -> tuple[str, int]:
    if item.startswith("["):  # [IPv6]:PORT
        host, _, port = item[1:].partition("]")
        port = port.removeprefix(":")
    else:
        host, _, port = item.partition(":")
    try:
        number = int(port) if port else DEFAULT_PORT
    except ValueError:
        number = 0
    if not host or not 0 < number < 65536:
        raise ConfigError(f"{url!r}: expected HOST:PORT[,HOST:PORT...], not {item!r}")
    return host, number


def connect(url: str) -> Client:
    """A client for ``url``. A standalone client's pool waits (up to the command timeout)
    when all connections are busy, as in a reconnect storm, instead of failing at once;
    a cluster client's pools fail at once, so cluster callers go through a :class:`Gate`.
    No automatic retries either way (see the module's docstring)."""
    if is_cluster(url):
        return connect_cluster(ClusterURL.parse(url))
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=POOL_SIZE, timeout=COMMAND_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=COMMAND_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )  # fmt: skip
    return aioredis.Redis(connection_pool=pool)


def connect_cluster(parsed: ClusterURL) -> RedisCluster:
    options = parsed.node_options()
    options.pop("retry")
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in parsed.nodes],
        # Zero retries: a command that failed on a dead or silent node is not sent again.
        retry=Retry(NoBackoff(), 0),
        # A master that died without a replica keeps its slots (in CLUSTER SLOTS, too);
        # do not refuse the whole cluster while some slots are not served.
        require_full_coverage=False,
        max_connections=2 * POOL_SIZE,
        **options,
    )


def shard_of(client: Client, key: str) -> str:
    """The name of the node serving ``key`` as far as ``client`` knows ("" if it does
    not know, or for a standalone client)."""
    if not isinstance(client, RedisCluster):
        return ""
    try:
        return client.nodes_manager.get_node_from_slot(key_slot(key.encode())).name
    except (RedisClusterException, KeyError):
        return ""


def by_shard(client: Client, items: Iterable[T], key: Callable[[T], str]) -> list[list[T]]:
    """``items`` grouped by the node serving ``key(item)``, each group in order."""
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(shard_of(client, key(item)), []).append(item)
    return list(groups.values())


class Gate:
    """At most ``size`` Redis operations at once (0: no limit), waiting at most
    ``timeout`` seconds for a turn (then ``TimeoutError``, an ``OSError``). A cluster
    client's per-node pools fail at once when full instead of waiting; this makes a
    burst of commands wait for its turn, like the standalone client's pool does."""

    def __init__(self, size: int, timeout: float = COMMAND_TIMEOUT) -> None:
        self.timeout = timeout
        self._semaphore = asyncio.Semaphore(size) if size > 0 else None

    async def __aenter__(self) -> None:
        if self._semaphore is not None:
            async with asyncio.timeout(self.timeout):
                await self._semaphore.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._semaphore is not None:
            self._semaphore.release()


def gate_for(client: Client) -> Gate:
    return Gate(POOL_SIZE if isinstance(client, RedisCluster) else 0)

"""Two roomcast nodes sharing a Redis broker of the tests' own, and real proxies in front
of them, rendered from the templates in deploy/ with a short idle timeout.

The nodes, Redis and each proxy are started once for all the tests of this directory
(each test uses rooms of its own) and stopped at the end. A test asks for ``proxy``
(nginx, HAProxy in HTTP mode, HAProxy in TCP mode) or ``l7_proxy`` (the first two)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import pytest

from roomcast.testing import RedisProcess, ServerProcess
from roomcast.testing_proxy import HaproxyProcess, NginxProcess, ProxyProcess, find_binary

from .helpers import API_KEY, HEARTBEAT, IDLE_TIMEOUT, NODES, POLL_TIMEOUT, SECRET, Proxied

KINDS = ("nginx", "haproxy-http", "haproxy-tcp")
L7_KINDS = ("nginx", "haproxy-http")


@pytest.fixture(scope="package")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    """A Redis of the tests' own on a free port (never the machine's own on 6379)."""
    if find_binary("redis-server") is None:
        pytest.skip("needs redis-server")
    server = RedisProcess(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def start_nodes(redis: RedisProcess) -> list[ServerProcess]:
    """node1 and node2 on ``redis``, with the same ``--secret`` (a session token from
    one node is good on the other) and API key, started side by side."""
    nodes = []
    for name in NODES:
        args = [
            "--broker", redis.url, "--node-id", name, "--secret", SECRET,
            "--api-key", API_KEY, "--publish-rate", "0",
            "--heartbeat", f"{HEARTBEAT:g}", "--poll-timeout", f"{POLL_TIMEOUT:g}",
        ]  # fmt: skip
        nodes.append(ServerProcess(args))
    with ThreadPoolExecutor(len(nodes)) as pool:
        starting = [pool.submit(node.start, 30) for node in nodes]
    try:
        for future in starting:
            future.result()
    except BaseException:
        for node in nodes:
            node.close()
        raise
    return nodes


@pytest.fixture(scope="package")
def cluster(redis: RedisProcess) -> Iterator[list[ServerProcess]]:
    """The two nodes behind the proxies of most tests."""
    nodes = start_nodes(redis)
    yield nodes
    for node in nodes:
        node.close()


@pytest.fixture(scope="package")
def spare_cluster(redis: RedisProcess) -> Iterator[list[ServerProcess]]:
    """Two more nodes, for tests that stop one (and start it again)."""
    nodes = start_nodes(redis)
    yield nodes
    for node in nodes:
        node.close()


def start_proxy(kind: str, directory: Path, cluster: list[ServerProcess]) -> Proxied:
    """A proxy of ``kind`` in front of the nodes, from its template in deploy/."""
    upstreams = [f"127.0.0.1:{node.port}" for node in cluster]
    idle = f"{IDLE_TIMEOUT:g}s"
    process: ProxyProcess
    if kind == "nginx":
        if not NginxProcess.available():
            pytest.skip("needs nginx (Debian package nginx)")
        process = NginxProcess(directory, upstreams, idle_timeout=idle)
    else:
        if not HaproxyProcess.available():
            pytest.skip("needs haproxy (Debian package haproxy)")
        mode = kind.removeprefix("haproxy-")
        process = HaproxyProcess(directory, upstreams, mode=mode, idle_timeout=idle)
    return Proxied(kind, process.start(timeout=30))


@pytest.fixture(scope="package")
def proxies(
    cluster: list[ServerProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], Proxied]]:
    """Start each kind of proxy the first time a test asks for it; all stop at the end."""
    started: dict[str, Proxied] = {}

    def get(kind: str) -> Proxied:
        if kind not in started:
            started[kind] = start_proxy(kind, tmp_path_factory.mktemp(kind), cluster)
        return started[kind]

    yield get
    for proxied in started.values():
        proxied.process.stop()


@pytest.fixture(params=KINDS)
def proxy(request: pytest.FixtureRequest, proxies: Callable[[str], Proxied]) -> Proxied:
    """Each proxy in turn: nginx, HAProxy (HTTP mode), HAProxy (TCP mode)."""
    kind: str = request.param
    return proxies(kind)


@pytest.fixture(params=L7_KINDS)
def l7_proxy(request: pytest.FixtureRequest, proxies: Callable[[str], Proxied]) -> Proxied:
    """The proxies that balance each HTTP request on its own: nginx, HAProxy (HTTP)."""
    kind: str = request.param
    return proxies(kind)


@pytest.fixture(params=KINDS)
def own_proxy(
    request: pytest.FixtureRequest, cluster: list[ServerProcess], tmp_path: Path
) -> Iterator[Proxied]:
    """Each kind of proxy in turn, started for this test alone: for a test whose
    requests time out on purpose (nginx then counts a node as failed for a while)."""
    proxied = start_proxy(request.param, tmp_path / request.param, cluster)
    yield proxied
    proxied.process.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session

"""A cluster under test: N ``roomcast serve --broker redis://…`` nodes sharing one Redis.

The publisher connects to node 1. The subscribers connect, round robin, either to every
node (placement ``spread``) or to every node but node 1 (``remote``: every delivery to a
subscriber crosses nodes, through Redis). Without a broker URL the target starts its own
``redis-server`` (:class:`roomcast.testing.RedisProcess`: AOF on, ``appendfsync always``)
in a temporary directory, fresh for every scenario like the nodes.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from roomcast.bench.pool import BenchError
from roomcast.bench.targets import ROOMCAST_ARGS
from roomcast.testing import RedisProcess, ServerProcess

PLACEMENTS = ("remote", "spread")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class ClusterTarget:
    """``nodes`` roomcast nodes on free ports with ``--broker`` (or a Redis of its own)."""

    name = "cluster"

    def __init__(
        self,
        nodes: int = 2,
        broker: str | None = None,
        placement: str = "remote",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if nodes < 1:
            raise BenchError("--nodes must be at least 1")
        if placement not in PLACEMENTS:
            raise BenchError(f"placement must be one of {PLACEMENTS}, not {placement!r}")
        if placement == "remote" and nodes < 2:
            placement = "spread"  # one node: nothing is remote
        self.nodes = nodes
        self.broker = broker
        self.placement = placement
        self.args = [*ROOMCAST_ARGS, *extra_args]
        self._servers: list[ServerProcess] = []
        self._redis: RedisProcess | None = None
        self._redis_pid: int | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def ws_url(self) -> str:
        if not self._servers:
            raise BenchError("the cluster is not started")
        return self._servers[0].ws_url

    @property
    def pid(self) -> int | None:
        return self._servers[0].pid if self._servers else None

    @property
    def subscriber_urls(self) -> list[str]:
        chosen = self._servers[1:] if self.placement == "remote" else self._servers
        return [server.ws_url for server in chosen]

    @property
    def processes(self) -> dict[str, int]:
        found = {f"node{n}": server.pid for n, server in enumerate(self._servers, start=1)}
        if self._redis_pid is not None:
            found["redis"] = self._redis_pid
        return found

    def start(self) -> None:
        url = self.broker
        try:
            if url is None:
                if shutil.which("redis-server") is None:
                    raise BenchError("redis-server is not installed: pass --broker redis://…")
                self._tmp = tempfile.TemporaryDirectory(prefix="roomcast-bench-redis-")
                self._redis = RedisProcess(Path(self._tmp.name) / "redis").start()
                url = self._redis.url
                assert self._redis.process is not None
                self._redis_pid = self._redis.process.pid
            else:
                self._redis_pid = local_redis_pid(url)
            for number in range(1, self.nodes + 1):
                args = [*self.args, "--broker", url, "--node-id", f"bench-node{number}"]
                server = ServerProcess(args)
                self._servers.append(server)  # before start: stop() closes it if it fails
                server.start()
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise BenchError(f"cannot start the cluster: {exc}") from exc
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for server in self._servers:
            server.close()
        self._servers = []
        if self._redis is not None:
            self._redis.stop()
            self._redis = None
        self._redis_pid = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def local_redis_pid(url: str) -> int | None:
    """The pid of the redis-server at ``url`` if it runs on this machine (to measure its
    CPU), else None."""
    if urlsplit(url).hostname not in LOCAL_HOSTS:
        return None
    import redis

    with contextlib.suppress(redis.RedisError, OSError, KeyError, ValueError):
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        try:
            pid = int(client.info("server")["process_id"])
        finally:
            client.close()
        if Path(f"/proc/{pid}/stat").exists():
            return pid
    return None

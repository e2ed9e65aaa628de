"""Helpers for tests and benchmarks: a real roomcast server in a child process.

    with ServerProcess(["--history", "memory"]) as server:
        server.ws_url   # ws://127.0.0.1:PORT/ws
        server.restart()

The server is started with ``python -m roomcast serve`` on a free port and is ready
when its ``/ready`` answers 200. Started with ``--tls-cert`` (or ``ROOMCAST_TLS_CERT``
in ``env``) it serves TLS: its URLs are https:// and wss://.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import redis
from redis.crc import key_slot

from roomcast.transports.base import FakeTransport

if TYPE_CHECKING:
    from roomcast.node import Node
    from roomcast.session import Session

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """A ``roomcast serve`` child process on a free port of 127.0.0.1."""

    def __init__(
        self,
        args: list[str] | None = None,
        *,
        port: int | None = None,
        data_dir: Path | None = None,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.args = list(args or [])
        self.port = port or free_port()
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if data_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="roomcast-test-")
            data_dir = Path(self._tmp.name)
        self.data_dir = data_dir
        self.env = env or {}
        self.log_path = log_path or self.data_dir / "server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def tls(self) -> bool:
        """Whether the server serves TLS (it was given a certificate)."""
        return "--tls-cert" in self.args or "ROOMCAST_TLS_CERT" in self.env

    @property
    def http_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, timeout: float = 20.0, *, ready: bool = True) -> ServerProcess:
        """Start; wait until ``/ready`` answers 200 (or only ``/health``, if not ``ready``)."""
        command = [
            sys.executable, "-m", "roomcast", "serve",
            "--port", str(self.port), "--data-dir", str(self.data_dir / "data"),
            *self.args,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        log.close()
        self.wait_ready(timeout, path="/ready" if ready else "/health")
        return self

    def wait_ready(self, timeout: float = 20.0, path: str = "/ready") -> None:
        """Poll ``path`` until it answers 200. Over TLS the probe does not check the
        certificate (a test's own, self-signed): it only asks whether the server is up."""
        context = None
        if self.tls:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(
                    self.http_url + path, timeout=1, context=context
                ) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send ``sig`` and wait for the exit; returns the exit code."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        return code

    def kill(self) -> int:
        return self.stop(signal.SIGKILL)

    def restart(self, sig: int = signal.SIGTERM) -> ServerProcess:
        self.stop(sig)
        return self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def fake_session(
    node: Node, user: str = "alice", **kwargs: Any
) -> tuple[Session, FakeTransport]:
    """A session of ``node`` on a :class:`FakeTransport`, its welcome already received."""
    transport = FakeTransport(**kwargs)
    session = node.open_session(transport, user)
    assert (await transport.receive())["type"] == "welcome"
    return session, transport


class RedisProcess:
    """A ``redis-server`` of the test's own on a free port, append-only file on, so that
    a restart keeps what was acknowledged (``appendfsync always``)."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisProcess:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
            "--appendonly", "yes", "--appendfsync", "always", "--save", "",
            "--daemonize", "no", "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(command)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(
                ("127.0.0.1", self.port), timeout=0.5
            ) as probe:
                probe.sendall(b"PING\r\n")
                if probe.recv(16).startswith(b"+PONG"):
                    return self
            time.sleep(0.05)
        raise TimeoutError(f"redis-server on port {self.port} did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is not None:
            self.process.send_signal(sig)
            self.process.wait(15)
            self.process = None

    def restart(self) -> RedisProcess:
        self.stop()
        return self.start()


class RedisClusterProcess:
    """A Redis Cluster of the test's own: ``masters`` ``redis-server`` processes in
    cluster mode (and ``replicas`` replicas of each), each on a free port with its cluster
    bus on another free port (``--cluster-port``), append-only file on (``appendfsync
    always``) and ``cluster-require-full-coverage no`` (a dead master takes only its own
    slots down).

        cluster = RedisClusterProcess(tmp_path / "cluster").start()
        cluster.url          # redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3
        cluster.stop(1, signal.SIGKILL)   # one master dies...
        cluster.start(1)                  # ...and comes back with its slots

    A master restarts on the same port with the same node config file, so it keeps its
    id and its slots. Never touches a Redis on the default port 6379."""

    def __init__(
        self, directory: Path, masters: int = 3, replicas: int = 0, *, node_timeout_ms: int = 2000
    ) -> None:
        self.directory = directory
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.ports: list[int] = []  # every node; the first ``masters`` start as masters
        self.bus_ports: list[int] = []
        while len(self.ports) < masters * (1 + replicas):
            port, bus = free_port(), free_port()
            taken = {6379, 16379, *self.ports, *self.bus_ports}
            if port != bus and not {port, bus} & taken:
                self.ports.append(port)
                self.bus_ports.append(bus)
        self.processes: list[subprocess.Popen[bytes] | None] = [None] * len(self.ports)
        self.created = False

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{port}" for port in self.ports)

    def masters(self) -> list[int]:
        """The indexes (in ``ports``) of the masters serving slots now."""
        return sorted({index for _, _, index in self.slot_map()})

    def start(self, shard: int | None = None, timeout: float = 30.0) -> RedisClusterProcess:
        """Start every master (or only ``shard``, an index in ``ports``), create the
        cluster the first time, and wait until every running master says
        ``cluster_state:ok``."""
        binary, cli = shutil.which("redis-server"), shutil.which("redis-cli")
        if binary is None or cli is None:
            raise RuntimeError("redis-server and redis-cli are needed")
        deadline = time.monotonic() + timeout
        for index in range(len(self.ports)) if shard is None else [shard]:
            if self.processes[index] is None:
                self._start_one(binary, index, deadline)
        if not self.created:
            nodes = [f"127.0.0.1:{port}" for port in self.ports]
            subprocess.run(
                [cli, "--cluster", "create", *nodes, "--cluster-replicas", str(self.replicas),
                 "--cluster-yes"],
                check=True, capture_output=True, timeout=max(1.0, deadline - time.monotonic()),
            )  # fmt: skip
            self.created = True
        self.wait_ok(deadline - time.monotonic())
        return self

    def _start_one(self, binary: str, index: int, deadline: float) -> None:
        port = self.ports[index]
        directory = self.directory / str(port)
        directory.mkdir(parents=True, exist_ok=True)
        command = [
            binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
            "--cluster-enabled", "yes", "--cluster-config-file", str(directory / "nodes.conf"),
            "--cluster-port", str(self.bus_ports[index]),
            "--cluster-node-timeout", str(self.node_timeout_ms),
            "--cluster-require-full-coverage", "no",
            "--appendonly", "yes", "--appendfsync", "always", "--save", "",
            "--daemonize", "no", "--logfile", str(directory / "redis.log"),
        ]  # fmt: skip
        self.processes[index] = subprocess.Popen(command)
        while self._ask(port, b"PING\r\n") != b"+PONG\r\n":
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on port {port} did not start")
            time.sleep(0.05)

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Poll every running node until each says ``cluster_state:ok``, knows all slots
        served, and (a replica) has synced with its master."""
        deadline = time.monotonic() + timeout
        running = [p for p, proc in zip(self.ports, self.processes, strict=True) if proc]
        while True:
            infos = [self._ask(port, b"CLUSTER INFO\r\n") for port in running]
            roles = [self._ask(port, b"INFO replication\r\n") for port in running]
            ok = all(b"cluster_state:ok" in i and b"cluster_slots_ok:16384" in i for i in infos)
            if ok and all(b"role:master" in r or b"master_link_status:up" in r for r in roles):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis cluster not ok after {timeout}s: {infos} {roles}")
            time.sleep(0.05)

    def wait_failover(self, dead: int, timeout: float = 30.0) -> None:
        """After master ``dead`` died: wait until its slots are served by a promoted
        replica and every running node says ``cluster_state:ok``."""
        deadline = time.monotonic() + timeout
        while dead in {index for _, _, index in self.slot_map()}:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no replica took over from port {self.ports[dead]}")
            time.sleep(0.05)
        self.wait_ok(deadline - time.monotonic())

    def wait_replicated(self, timeout: float = 10.0) -> None:
        """Wait until every replica has what its master wrote (a failover loses nothing)."""
        deadline = time.monotonic() + timeout
        while True:
            lagging = []
            for port in (p for p, proc in zip(self.ports, self.processes, strict=True) if proc):
                info = self._ask(port, b"INFO replication\r\n").decode()
                fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
                if fields.get("role") != "master":
                    continue
                top = fields.get("master_repl_offset")
                replicas = [v for k, v in fields.items() if re.fullmatch(r"slave\d+", k)]
                if any(f"offset={top}," not in replica for replica in replicas):
                    lagging.append(port)
            if not lagging:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"replicas of {lagging} still behind after {timeout}s")
            time.sleep(0.05)

    def slot_map(self) -> list[tuple[int, int, int]]:
        """(first slot, last slot, index in ``ports`` of its master), as the first running
        node answering ``CLUSTER SLOTS`` says."""
        for port in (p for p, proc in zip(self.ports, self.processes, strict=True) if proc):
            with (
                redis.Redis(port=port, socket_timeout=5) as client,
                contextlib.suppress(redis.RedisError),
            ):
                ranges = client.execute_command("CLUSTER SLOTS")
                return [(a, b, self.ports.index(int(m[1]))) for a, b, m, *_ in ranges]
        raise LookupError("no running node answers CLUSTER SLOTS")

    def shard_of(self, key: str) -> int:
        """The index (in ``ports``) of the master serving ``key``'s hash slot."""
        slot = key_slot(key.encode())
        return next(index for first, last, index in self.slot_map() if first <= slot <= last)

    @staticmethod
    def _ask(port: int, command: bytes) -> bytes:
        """One inline command, its whole reply (empty if the server does not answer)."""
        with (
            contextlib.suppress(OSError),
            socket.create_connection(("127.0.0.1", port), timeout=1) as probe,
        ):
            probe.sendall(command)
            reply = probe.recv(65536)
            if reply.startswith(b"$"):  # a bulk string: read up to its announced length
                head, _, body = reply.partition(b"\r\n")
                while len(body) < int(head[1:]) + 2:
                    more = probe.recv(65536)
                    if not more:
                        break
                    body += more
                return body
            return reply
        return b""

    def stop(self, shard: int | None = None, sig: int = signal.SIGTERM) -> None:
        """Stop every master, or only ``shard`` (with ``signal.SIGKILL``: it dies)."""
        for index in range(len(self.ports)) if shard is None else [shard]:
            process, self.processes[index] = self.processes[index], None
            if process is not None:
                process.send_signal(sig)
                process.wait(15)


class RawWebSocket:
    """A bare RFC 6455 client on asyncio streams, for clients that misbehave on purpose:
    one that never answers pings, or never reads. It does only what a test tells it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls, host: str, port: int, path: str = "/ws", *, rcvbuf: int | None = None
    ) -> RawWebSocket:
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode(errors="replace"))
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if f"sec-websocket-accept: {accept}".lower().encode() not in head.lower():
            raise ConnectionError("wrong Sec-WebSocket-Accept")
        return cls(reader, writer)

    def send_frame(self, opcode: int, payload: bytes) -> None:
        """Send one masked frame with FIN set."""
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
        elif size < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0xFE, size)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0xFF, size)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(header + mask + masked)

    def send_text(self, text: str) -> None:
        self.send_frame(0x1, text.encode())

    async def recv_frame(self) -> tuple[int, bytes]:
        """The next frame from the server: (opcode, payload)."""
        first, second = await self.reader.readexactly(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await self.reader.readexactly(size)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()

"""The servers under test: roomcast, the Node.js ws baseline, or one already running.

A target's ``transport`` (``websocket`` unless it says otherwise) is how its subscribers
read the room: ``sse`` targets are read over ``GET /sse`` (the publisher always uses
WebSocket), so that the same server can be measured over both, in the same run.

(A cluster of roomcast nodes sharing a Redis broker is in :mod:`roomcast.bench.cluster`.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Protocol

from roomcast.bench.pool import BenchError
from roomcast.testing import ServerProcess, free_port

MAX_BUFFER = 64 * 1024 * 1024
ROOMCAST_ARGS = (
    "--history", "memory", "--publish-rate", "0", "--max-buffer", str(MAX_BUFFER),
    "--log-level", "warning",
)  # fmt: skip


def default_node_script() -> Path:
    """benchmarks/node_ws_server.js of the source tree roomcast is installed from."""
    override = os.environ.get("ROOMCAST_BENCH_NODE_SCRIPT")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[3] / "benchmarks" / "node_ws_server.js"


class Target(Protocol):
    name: str

    @property
    def ws_url(self) -> str: ...

    @property
    def pid(self) -> int | None:
        """The server process to measure (None: unknown, CPU and RSS are not measured)."""
        ...

    @property
    def subscriber_urls(self) -> list[str]:
        """Where the subscribers connect, round robin (the publisher uses ``ws_url``)."""
        ...

    @property
    def processes(self) -> dict[str, int]:
        """Every server-side process to measure, by name (CPU and RSS are their sums)."""
        ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


TRANSPORTS = ("websocket", "sse")


def transport_of(target: object) -> str:
    """How the subscribers of ``target`` read the room: "websocket" or "sse"."""
    return str(getattr(target, "transport", "websocket"))


def transport_name(name: str, transport: str) -> str:
    """A target's name: ``name`` over WebSocket, ``name-sse`` over SSE."""
    return name if transport == "websocket" else f"{name}-{transport}"


class RoomcastTarget:
    """``roomcast serve`` with memory history, no publish limit and a large --max-buffer;
    its subscribers read over ``transport`` (the target is named ``roomcast-sse`` for SSE)."""

    def __init__(self, extra_args: tuple[str, ...] = (), transport: str = "websocket") -> None:
        if transport not in TRANSPORTS:
            raise BenchError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
        self.transport = transport
        self.name = transport_name("roomcast", transport)
        self.args = [*ROOMCAST_ARGS, *extra_args]
        self._server: ServerProcess | None = None

    @property
    def ws_url(self) -> str:
        assert self._server is not None
        return self._server.ws_url

    @property
    def pid(self) -> int | None:
        return None if self._server is None else self._server.pid

    @property
    def subscriber_urls(self) -> list[str]:
        return [self.ws_url]

    @property
    def processes(self) -> dict[str, int]:
        return {} if self._server is None else {self.name: self._server.pid}

    def start(self) -> None:
        self._server = ServerProcess(self.args).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


class NodeTarget:
    """``node benchmarks/node_ws_server.js`` on a free port."""

    name = "node"

    def __init__(self, script: Path | None = None) -> None:
        self.script = script or default_node_script()
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Path | None = None

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def subscriber_urls(self) -> list[str]:
        return [self.ws_url]

    @property
    def processes(self) -> dict[str, int]:
        return {} if self._process is None else {self.name: self._process.pid}

    def start(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise BenchError("node is not installed: cannot run the Node.js baseline")
        if not self.script.exists():
            raise BenchError(f"no Node.js baseline at {self.script}")
        self.port = free_port()
        fd, log = tempfile.mkstemp(prefix="roomcast-node-", suffix=".log")
        self._log = Path(log)
        command = [node, str(self.script), "--port", str(self.port)]
        try:
            self._process = subprocess.Popen(command, stdout=fd, stderr=subprocess.STDOUT)
        finally:
            os.close(fd)
        self._wait_ready(20.0)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise BenchError(f"the Node.js baseline exited:\n{self._read_log()}")
            try:
                url = f"http://127.0.0.1:{self.port}/ready"
                with urllib.request.urlopen(url, timeout=1) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.05)
        raise BenchError(f"the Node.js baseline is not ready after {timeout}s")

    def _read_log(self) -> str:
        if self._log is None:
            return ""
        return self._log.read_text(errors="replace")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.unlink(missing_ok=True)
            self._log = None


class UrlTarget:
    """A server someone else started; ``pid`` (if given) is measured."""

    def __init__(
        self, url: str, pid: int | None, name: str = "url", transport: str = "websocket"
    ) -> None:
        if transport not in TRANSPORTS:
            raise BenchError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
        self.transport = transport
        self.name = transport_name(name, transport)
        self._url = url
        self._pid = pid

    @property
    def ws_url(self) -> str:
        return self._url

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def subscriber_urls(self) -> list[str]:
        return [self._url]

    @property
    def processes(self) -> dict[str, int]:
        return {} if self._pid is None else {self.name: self._pid}

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

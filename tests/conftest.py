"""Shared fixtures: real servers on free ports, and a small WebSocket client for tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
from oneway_client import OneWay

from roomcast.config import Settings
from roomcast.node import Node
from roomcast.testing import RedisProcess, ServerProcess
from roomcast.testing_nats import NatsProcess

ServerFactory = Callable[..., ServerProcess]


@pytest.fixture
def server_factory() -> Iterator[ServerFactory]:
    """Start servers with extra CLI arguments; all are stopped after the test."""
    started: list[ServerProcess] = []

    def start(
        *args: str, start_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ) -> ServerProcess:
        server = ServerProcess(list(args), **kwargs).start(**(start_kwargs or {}))
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of the test's own, on a free port (never the machine's 6379)."""
    server = RedisProcess(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsProcess]:
    """A nats-server with JetStream of the test's own, on a free port."""
    server = NatsProcess(tmp_path / "nats").start()
    yield server
    server.close()


@pytest.fixture
def server(server_factory: ServerFactory) -> ServerProcess:
    """One server with memory history and a test API key."""
    return server_factory("--history", "memory", "--api-key", "test-key")


class WsClient:
    """A test client on the independent ``websockets`` library: send dicts, read dicts."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.welcome: dict[str, Any] = {}
        self.skipped: list[dict[str, Any]] = []  # frames request() and until() passed over

    async def send(self, **command: Any) -> None:
        await self.ws.send(json.dumps(command))

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        value: dict[str, Any] = json.loads(frame)
        return value

    async def request(self, timeout: float = 5.0, **command: Any) -> dict[str, Any]:
        """Send a command with an id; return its reply, ignoring events before it."""
        await self.send(**command)
        while True:
            frame = await self.recv(timeout)
            if frame.get("type") in {"ok", "error", "pong"} and frame.get("id") == command["id"]:
                return frame
            self.skipped.append(frame)

    async def until(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame of ``type`` ``kind``, skipping others."""
        while True:
            frame = await self.recv(timeout)
            if frame["type"] == kind:
                return frame
            self.skipped.append(frame)


@pytest.fixture
async def ws_connect() -> AsyncIterator[Callable[..., Any]]:
    """Open WebSocket connections (closed after the test); returns after the welcome."""
    opened: list[websockets.ClientConnection] = []

    async def connect(url: str, **kwargs: Any) -> WsClient:
        ws = await websockets.connect(url, **kwargs)
        opened.append(ws)
        client = WsClient(ws)
        client.welcome = await client.recv()
        assert client.welcome["type"] == "welcome"
        return client

    yield connect
    for ws in opened:
        await ws.close()


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    """An in-process node on memory history (no sockets); sessions use FakeTransport."""
    instance = Node(Settings(history="memory", publish_rate=0, max_rooms=3, node_id="n1"))
    await instance.start()
    yield instance
    await instance.drain()



@pytest.fixture
async def oneway(server: ServerProcess) -> AsyncIterator[OneWay]:
    """SSE, poll and send against the ``server`` fixture."""
    async with aiohttp.ClientSession() as http:
        client = OneWay(http, server.http_url)
        yield client
        client.close()

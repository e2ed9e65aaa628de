"""Helpers of the client tests: an event reader, blocking publishers, CLI subprocesses."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from collections.abc import Callable
from typing import Any

from roomcast.client import Backoff, Client, Event
from roomcast.testing import ServerProcess

ServerFactory = Callable[..., ServerProcess]

# Tests reconnect fast: at most 0.2 s between attempts.
FAST = Backoff(base=0.05, factor=2.0, cap=0.2)


class Events:
    """Reads one Client's events (one shared iterator), with a timeout on every wait."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.iterator = aiter(client.events())
        self.seen: list[Event] = []

    async def next(self, kind: str | None = None, timeout: float = 10.0) -> Event:
        """The next event (of type ``kind``, skipping others)."""
        async with asyncio.timeout(timeout):
            while True:
                event = await anext(self.iterator)
                self.seen.append(event)
                if kind is None or event["type"] == kind:
                    return event

    async def messages(self, count: int, timeout: float = 10.0) -> list[Event]:
        return [await self.next("message", timeout) for _ in range(count)]


def http_publish(server: ServerProcess, room: str, data: Any, key: str = "test-key") -> Event:
    """Publish through the HTTP API, blocking (the event loop of the test stands still)."""
    request = urllib.request.Request(
        server.http_url + "/api/publish",
        data=json.dumps({"room": room, "data": data}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        value: Event = json.loads(answer.read())
    return value


def payloads(messages: list[Event]) -> list[tuple[int, Any]]:
    return [(message["offset"], message["data"]) for message in messages]


class Cli:
    """A ``roomcast`` subprocess with piped stdin/stdout/stderr, read line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[str] = []

    @classmethod
    async def start(cls, *args: str) -> Cli:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "roomcast", *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return cls(process)

    async def type(self, *lines: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("".join(line + "\n" for line in lines).encode())
        await self.process.stdin.drain()

    async def line(self, timeout: float = 10.0) -> str:
        """The next stdout line (without its newline)."""
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not raw:
            raise EOFError(f"stdout ended; stderr: {await self.stderr()}")
        line = raw.decode().rstrip("\n")
        self.lines.append(line)
        return line

    async def json(self, timeout: float = 10.0) -> Event:
        value: Event = json.loads(await self.line(timeout))
        return value

    async def end_input(self) -> int:
        """Close stdin (EOF) and wait for the exit code."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        return await asyncio.wait_for(self.process.wait(), 10)

    async def stderr(self) -> str:
        assert self.process.stderr is not None
        if self.process.returncode is None:
            return "(still running)"
        return (await self.process.stderr.read()).decode()

    def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()


def ws_publish(server: ServerProcess, room: str, data: Any, name: str = "bob") -> Event:
    """Publish as another WebSocket client, blocking (join, publish, wait for the ok)."""
    from websockets.sync.client import connect

    with connect(f"{server.ws_url}?name={name}") as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "welcome"
        ws.send(json.dumps({"type": "join", "room": room, "id": 1}))
        ws.send(json.dumps({"type": "publish", "room": room, "data": data, "id": 2}))
        while True:
            frame: Event = json.loads(ws.recv(timeout=10))
            if frame.get("id") == 2:
                assert frame["type"] == "ok", frame
                return frame

"""Clients of the deployment tests, on aiohttp's client (independent of roomcast's own):
an SSE stream read event by event, long polls, POST /send and the HTTP API."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
from conftest import WsClient

from roomcast.testing_proxy import ProxyProcess

API_KEY: Final = "deploy-test-key"
SECRET: Final = "deploy-test-secret-shared-by-both-nodes"
HEARTBEAT: Final = 1.0  # the nodes' --heartbeat in these tests (25 in production)
IDLE_TIMEOUT: Final = 3.0  # the proxies' idle timeout in these tests (60 in production)
POLL_TIMEOUT: Final = 10.0  # the nodes' --poll-timeout: above IDLE_TIMEOUT on purpose
POLL_WAIT: Final = "1"  # what the tests' polls ask for (?timeout=): below IDLE_TIMEOUT
NODES: Final = ("node1", "node2")
PRESENCE: Final = frozenset({"joined", "left"})
Connect = Callable[..., Any]  # the ws_connect fixture: websockets, returns a WsClient


@dataclass(frozen=True)
class Proxied:
    """A running proxy in front of both nodes, with its kind and whether it reads HTTP."""

    kind: str  # nginx, haproxy-http, haproxy-tcp
    process: ProxyProcess

    @property
    def url(self) -> str:
        return self.process.http_url

    @property
    def ws_url(self) -> str:
        return self.process.ws_url

    @property
    def l7(self) -> bool:
        return self.kind != "haproxy-tcp"


def new_room() -> str:
    return f"deploy-{uuid.uuid4().hex[:10]}"


def without_ts(frame: dict[str, Any]) -> dict[str, Any]:
    """A ``message`` frame without its ``ts`` (the server's clock), which must be an int."""
    assert isinstance(frame.get("ts"), int), frame
    return {key: value for key, value in frame.items() if key != "ts"}


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: dict[str, Any]
    id: str | None


class SseStream:
    """``GET /sse`` read event by event; ``: ping`` comments are counted in ``pings``."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.pings = 0

    async def _line(self) -> str:
        raw = await self.response.content.readline()
        if not raw:
            raise EOFError("the stream ended")
        return raw.decode().rstrip("\r\n")

    async def _event(self) -> SseEvent:
        fields: dict[str, str] = {}
        while True:
            line = await self._line()
            if line.startswith(":"):
                self.pings += 1
            elif line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
            elif fields:
                return SseEvent(fields["event"], json.loads(fields["data"]), fields.get("id"))

    async def next(self, timeout: float = 10.0, skip: frozenset[str] = PRESENCE) -> SseEvent:
        """The next event whose type is not in ``skip`` (presence events by default)."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self._event()
                if event.event not in skip:
                    return event

    async def count_pings(self, count: int, timeout: float = 20.0) -> list[SseEvent]:
        """Read until ``count`` more ``: ping`` comments came; the events meanwhile."""
        target = self.pings + count
        events: list[SseEvent] = []
        async with asyncio.timeout(timeout):
            while self.pings < target:
                line = await self._line()
                if line.startswith(":"):
                    self.pings += 1
                elif line.startswith("event:"):
                    events.append(SseEvent(line.partition(":")[2].strip(), {}, None))
        return events

    def close(self) -> None:
        self.response.close()


async def open_sse(
    http: aiohttp.ClientSession, base: str, last_event_id: str | None = None, **params: str
) -> SseStream:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    response = await http.get(
        base + "/sse",
        params=params,
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
    )
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"] == "text/event-stream"
    return SseStream(response)


async def poll(http: aiohttp.ClientSession, base: str, **params: str) -> dict[str, Any]:
    async with http.get(base + "/poll", params=params) as response:
        assert response.status == 200, await response.text()
        answer: dict[str, Any] = await response.json()
        return answer


async def send(
    http: aiohttp.ClientSession, base: str, token: str, command: dict[str, Any]
) -> tuple[int, dict[str, Any]]:
    async with http.post(base + "/send", params={"session": token}, json=command) as response:
        return response.status, await response.json()


async def api_publish(http: aiohttp.ClientSession, base: str, room: str, data: Any) -> int:
    """Publish through the HTTP API; the message's offset."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"room": room, "data": data}
    async with http.post(base + "/api/publish", json=body, headers=headers) as response:
        assert response.status == 200, await response.text()
        offset: int = (await response.json())["offset"]
        return offset


async def started(stream: SseStream, room: str) -> tuple[dict[str, Any], str]:
    """The stream's ``welcome`` and the epoch of its room's ``ok``."""
    welcome = await stream.next()
    assert welcome.event == "welcome"
    ok = await stream.next()
    epoch: str = ok.data["epoch"]
    assert (ok.event, ok.data, ok.id) == (
        "ok", {"type": "ok", "room": room, "epoch": epoch, "offset": 0}, f"{room}~{epoch}~0"
    )  # fmt: skip
    return welcome.data, epoch


@dataclass
class Peer:
    client: WsClient
    user: str

    @property
    def member(self) -> dict[str, str]:
        return {"session": self.client.welcome["session"], "user": self.user}


async def on_both_nodes(proxy: Proxied, ws_connect: Connect) -> dict[str, Peer]:
    """Connect through the proxy until there is a client on each node (round robin
    alternates, so two connections are usually enough); {node: peer}."""
    peers: dict[str, Peer] = {}
    for n in range(6):
        client: WsClient = await ws_connect(f"{proxy.ws_url}?name=user{n}", proxy=None)
        assert client.ws.response is not None
        assert client.ws.response.status_code == 101  # the upgrade went through
        assert client.welcome["heartbeat"] == 1
        peers.setdefault(client.welcome["node"], Peer(client, f"user{n}"))
        if len(peers) == len(NODES):
            return peers
    raise AssertionError(f"six connections through {proxy.kind} all landed on {set(peers)}")


async def publish(sender: WsClient, room: str, data: Any, command_id: int) -> tuple[Any, Any]:
    """Publish; the sender's ``ok`` and its own copy of the message (either may come
    first)."""
    await sender.send(type="publish", room=room, data=data, id=command_id)
    ok = message = None
    while ok is None or message is None:
        frame = await sender.recv(10)
        if frame["type"] == "ok" and frame.get("id") == command_id:
            ok = frame
        elif frame["type"] == "message":
            message = frame
        else:
            assert frame["type"] in {"joined", "left"}, frame
    return ok, message


async def next_message(client: WsClient) -> dict[str, Any]:
    """The next ``message``, past presence events: a ``joined`` published by one node just
    before a client of another node joined may reach that client just after."""
    while True:
        frame = await client.recv(10)
        if frame["type"] == "message":
            return frame
        assert frame["type"] in {"joined", "left"}, frame

"""Chaos: a 3-node cluster on Redis keeps every promise while a node and Redis restart.

300 WebSocket clients (the ``websockets`` library, all in this test's event loop) are
spread over 3 nodes, 10 in each of 30 rooms; two of each room's clients publish. While
they publish (about 9 s, a bounded number of messages), node 3 is restarted (SIGTERM,
then started again on the same port) and so is Redis (its AOF keeps what was
acknowledged). A client whose connection ends reconnects to the next node that takes it
and rejoins with ``since`` = the last offset it processed.

Afterwards, for every room, the stream in the broker's history (the HTTP API) must be
offsets 1..top, every ``ok`` a publish got must name an offset holding that publish,
and every client must have processed exactly 1..top, in order, each offset once, with
the data history has. A rejoin answered ``recovered: false`` is a failure: the message
count stays far below --history-size, so it could only mean loss. ``unavailable``
answers, and publishes whose connection died before the answer, promise nothing.

    .venv/bin/pytest tests/test_chaos.py -s    # prints the one-line summary
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets

from roomcast.testing import RedisProcess, ServerProcess

pytestmark = [
    pytest.mark.chaos,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
    pytest.mark.timeout(90),
]

NODES = 3
ROOMS = 30
PER_ROOM = 10
PUBLISHERS_PER_ROOM = 2
PUBLISHES_PER_PUBLISHER = 30  # 60 a room at most, far below HISTORY_SIZE
HISTORY_SIZE = 1000
PUBLISH_SECONDS = 9.0
NODE_RESTART_AT = 2.0  # seconds into publishing
REDIS_RESTART_AT = 5.5
REPLY_TIMEOUT = 5.0
CONVERGE_TIMEOUT = 15.0
API_KEY = "chaos"


class Lost(Exception):
    """The connection ended before the reply came: the outcome is unknown."""


@dataclass(frozen=True)
class Ack:
    room: str
    offset: int
    tag: str


@dataclass
class Tally:
    sent: int = 0
    acked: int = 0
    unavailable: int = 0
    in_doubt: int = 0  # no answer: connection lost or reply timeout
    other_errors: list[str] = field(default_factory=list)


class Client:
    """One member of one room; reconnects to the next node and recovers with ``since``."""

    def __init__(self, name: str, room: str, node: int, urls: list[str]) -> None:
        self.name = name
        self.room = room
        self.node = node
        self.urls = urls
        self.epoch: str | None = None
        self.last = 0  # the last offset processed
        self.offsets: list[int] = []  # every offset processed, in order of arrival
        self.tags: dict[int, str] = {}  # offset -> the data's tag
        self.problems: list[str] = []
        self.reconnects = 0
        self.recovered = 0  # rejoins answered recovered:true
        self.not_recovered = 0
        self.joined = asyncio.Event()
        self.stopping = False
        self._ws: websockets.ClientConnection | None = None
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count(1)

    async def run(self, ready: asyncio.Event) -> None:
        """Connect, join, read; after a disconnect do it again, until told to stop."""
        first = True
        while not self.stopping:
            ws = await self._connect()
            if ws is None:
                return
            reader = asyncio.create_task(self._read(ws))
            try:
                await self._join(first)
                if first:
                    ready.set()
                first = False
                self.joined.set()
                await reader
            except (Lost, websockets.ConnectionClosed, OSError):
                pass
            finally:
                self.joined.clear()
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
                await ws.close()
            if not self.stopping:
                self.reconnects += 1
                self.node = (self.node + 1) % len(self.urls)

    async def _connect(self) -> websockets.ClientConnection | None:
        """The first node, from the current one on, that takes the connection."""
        for attempt in range(200):
            if self.stopping:
                return None
            url = f"{self.urls[self.node]}?name={self.name}"
            try:
                ws = await websockets.connect(url, max_queue=4096, open_timeout=5)
                welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert welcome["type"] == "welcome"
            except (OSError, TimeoutError, websockets.WebSocketException):
                self.node = (self.node + 1) % len(self.urls)
                await asyncio.sleep(min(0.5, 0.05 * (attempt + 1)))
                continue
            self._ws = ws
            return ws
        self.problems.append("could not reconnect to any node")
        return None

    async def _join(self, first: bool) -> None:
        """Join (with ``since`` after a disconnect); retried while the node says
        ``unavailable`` (Redis down)."""
        while True:
            command: dict[str, Any] = {"type": "join", "room": self.room}
            if not first:
                command["since"] = {"epoch": self.epoch, "offset": self.last}
            reply = await self.request(command)
            if reply["type"] == "ok":
                break
            if reply.get("code") != "unavailable":
                raise AssertionError(f"{self.name}: join refused: {reply}")
            await asyncio.sleep(0.2)
        if first:
            self.epoch = reply["epoch"]
            if reply["offset"] != 0:
                self.problems.append(f"joined a room that had messages: {reply}")
        elif reply.get("recovered") is True:
            self.recovered += 1
        else:
            self.not_recovered += 1
            self.problems.append(f"rejoin after offset {self.last}: {reply}")

    async def request(self, command: dict[str, Any]) -> dict[str, Any]:
        ws = self._ws
        if ws is None:
            raise Lost
        ident = f"{self.name}-{next(self._ids)}"
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[ident] = future
        try:
            await ws.send(json.dumps({**command, "id": ident}))
            return await asyncio.wait_for(future, REPLY_TIMEOUT)
        except (websockets.ConnectionClosed, OSError, TimeoutError) as exc:
            raise Lost from exc
        finally:
            self._replies.pop(ident, None)

    async def _read(self, ws: websockets.ClientConnection) -> None:
        try:
            async for text in ws:
                frame = json.loads(text)
                kind = frame["type"]
                if kind == "message":
                    self._process(frame)
                elif kind in {"ok", "error"} and frame.get("id") in self._replies:
                    future = self._replies[frame["id"]]
                    if not future.done():
                        future.set_result(frame)
        finally:
            for future in self._replies.values():
                if not future.done():
                    future.set_exception(Lost())
                    future.exception()

    def _process(self, frame: dict[str, Any]) -> None:
        offset = frame["offset"]
        if frame["room"] != self.room or frame["epoch"] != self.epoch:
            self.problems.append(f"foreign message {frame['room']}/{frame['epoch']}/{offset}")
            return
        if offset != self.last + 1:
            self.problems.append(f"offset {offset} after {self.last}")
        self.offsets.append(offset)
        self.tags[offset] = frame["data"]["tag"]
        self.last = max(self.last, offset)

    async def publish(self, count: int, seconds: float, tally: Tally) -> list[Ack]:
        """Up to ``count`` publishes, evenly spaced over ``seconds``, only while joined;
        returns the acknowledged ones."""
        acked: list[Ack] = []
        loop = asyncio.get_running_loop()
        start = loop.time()
        for number in range(count):
            await asyncio.sleep(max(0.0, start + number * seconds / count - loop.time()))
            if not self.joined.is_set():
                continue  # reconnecting: this one is not sent
            tag = f"{self.name}:{number}"
            command = {"type": "publish", "room": self.room, "data": {"tag": tag}}
            tally.sent += 1
            try:
                reply = await self.request(command)
            except Lost:
                tally.in_doubt += 1
                continue
            if reply["type"] == "ok":
                tally.acked += 1
                acked.append(Ack(self.room, reply["offset"], tag))
            elif reply.get("code") == "unavailable":
                tally.unavailable += 1
            else:
                tally.other_errors.append(f"{self.name}: {reply}")
        return acked

    async def stop(self) -> None:
        self.stopping = True
        if self._ws is not None:
            await self._ws.close()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
async def nodes(redis: RedisProcess, tmp_path: Path) -> Any:
    for n in range(1, NODES + 1):
        (tmp_path / f"node{n}").mkdir()
    servers = [
        ServerProcess(
            ["--broker", redis.url, "--api-key", API_KEY, "--node-id", f"chaos{n}",
             "--history-size", str(HISTORY_SIZE), "--shutdown-timeout", "2",
             "--log-level", "warning"],
            data_dir=tmp_path / f"node{n}",
        )
        for n in range(1, NODES + 1)
    ]  # fmt: skip
    try:
        await asyncio.gather(*(asyncio.to_thread(server.start) for server in servers))
        yield servers
    finally:
        for server in servers:
            server.close()


async def history(url: str, room: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {API_KEY}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{url}/api/rooms/{room}/history?limit={HISTORY_SIZE}", headers=headers) as got,
    ):
        assert got.status == 200, await got.text()
        answer: dict[str, Any] = await got.json()
        return answer


async def test_restarting_a_node_and_redis_loses_nothing_acknowledged(
    redis: RedisProcess, nodes: list[ServerProcess]
) -> None:
    urls = [server.ws_url for server in nodes]
    rooms = [f"chaos-{number}" for number in range(ROOMS)]
    clients = [
        Client(f"c{room_number}-{n}", room, (room_number * PER_ROOM + n) % NODES, urls)
        for room_number, room in enumerate(rooms)
        for n in range(PER_ROOM)
    ]
    readiness = [asyncio.Event() for _ in clients]
    runs = [
        asyncio.create_task(client.run(ready))
        for client, ready in zip(clients, readiness, strict=True)
    ]
    tally = Tally()
    try:
        async with asyncio.timeout(30):
            await asyncio.gather(*(ready.wait() for ready in readiness))
        publishers = [c for c in clients if int(c.name.rsplit("-", 1)[1]) < PUBLISHERS_PER_ROOM]
        jobs = [
            asyncio.create_task(c.publish(PUBLISHES_PER_PUBLISHER, PUBLISH_SECONDS, tally))
            for c in publishers
        ]
        began = asyncio.get_running_loop().time()
        await asyncio.sleep(NODE_RESTART_AT)
        await asyncio.to_thread(nodes[-1].restart)  # SIGTERM, then the same port again
        await sleep_until(max(began + REDIS_RESTART_AT, asyncio.get_running_loop().time() + 1))
        await asyncio.to_thread(redis.restart)
        acked = [ack for part in await asyncio.gather(*jobs) for ack in part]
        streams = {room: await history(nodes[0].http_url, room) for room in rooms}
        await converge(clients, {room: streams[room]["offset"] for room in rooms})
    finally:
        for client in clients:
            await client.stop()
        await asyncio.gather(*runs, return_exceptions=True)
    summary, failures = check(clients, streams, acked, tally)
    print(f"\n{summary}")
    assert not failures, "\n".join([summary, *failures[:40]])


async def sleep_until(when: float) -> None:
    await asyncio.sleep(max(0.0, when - asyncio.get_running_loop().time()))


async def converge(clients: list[Client], tops: dict[str, int]) -> None:
    """Wait until every client is joined and has processed its room's top offset."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + CONVERGE_TIMEOUT
    while loop.time() < deadline:
        if all(c.joined.is_set() and c.last >= tops[c.room] for c in clients):
            return
        await asyncio.sleep(0.05)


def check(
    clients: list[Client], streams: dict[str, dict[str, Any]], acked: list[Ack], tally: Tally
) -> tuple[str, list[str]]:
    """(the summary line, every failure found)."""
    failures: list[str] = [f"publish error: {error}" for error in tally.other_errors]
    tags_of: dict[str, dict[int, str]] = {}
    for room, stream in streams.items():
        offsets = [message["offset"] for message in stream["messages"]]
        if offsets != list(range(1, stream["offset"] + 1)):
            failures.append(f"{room}: history is not 1..{stream['offset']}: {offsets}")
        tags_of[room] = {m["offset"]: m["data"]["tag"] for m in stream["messages"]}
    for ack in acked:
        stored = tags_of[ack.room].get(ack.offset)
        if stored != ack.tag:
            failures.append(f"ok for {ack.tag} at {ack.room}/{ack.offset}; history has {stored}")
    gaps = duplicates = disorder = delivered = 0
    for client in clients:
        top = streams[client.room]["offset"]
        expected = list(range(1, top + 1))
        seen = set(client.offsets)
        missing = sorted(set(expected) - seen)
        extra = len(client.offsets) - len(seen)
        gaps += len(missing)
        duplicates += extra
        disorder += int(client.offsets != sorted(client.offsets))
        delivered += len(client.offsets)
        if client.offsets != expected:
            failures.append(
                f"{client.name} ({client.room}, top {top}): missing {missing[:10]}, "
                f"{extra} duplicated, in order: {client.offsets == sorted(client.offsets)}"
            )
        wrong = [o for o, tag in client.tags.items() if tags_of[client.room].get(o) != tag]
        if wrong:
            failures.append(f"{client.name}: data differs from history at offsets {wrong[:10]}")
        failures += [f"{client.name}: {problem}" for problem in client.problems]
    reconnects = sum(c.reconnects for c in clients)
    recovered = sum(c.recovered for c in clients)
    not_recovered = sum(c.not_recovered for c in clients)
    stored = sum(stream["offset"] for stream in streams.values())
    summary = (
        f"chaos: {len(clients)} clients, {len(streams)} rooms, {NODES} nodes; "
        f"publishes {tally.sent} sent, {tally.acked} acked, {tally.unavailable} unavailable, "
        f"{tally.in_doubt} unanswered; messages stored {stored}; "
        f"deliveries checked {delivered}; reconnects {reconnects}, recovered ok {recovered}, "
        f"recovered false {not_recovered}; gaps {gaps}, duplicates {duplicates}, "
        f"out of order {disorder}"
    )
    return summary, failures

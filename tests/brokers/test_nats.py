"""The NATS broker against real ``nats-server`` processes (JetStream on, a free port, a
store directory of the test's own): two brokers in one process stand for two nodes."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomcast.brokers.base import Draft, Page, Position, Publication
from roomcast.brokers.jetstream import Head, NoStream
from roomcast.brokers.nats import NatsBroker, room_of_token, room_token
from roomcast.config import Settings
from roomcast.exceptions import BrokerError
from roomcast.history.base import now_ms
from roomcast.protocol import ROOM_PATTERN, Member, encode_message
from roomcast.testing_nats import NatsProcess, nats_server_binary

pytestmark = pytest.mark.skipif(nats_server_binary() is None, reason="no nats-server")


class Node:
    """A connected broker and every publication it delivered."""

    def __init__(self, broker: NatsBroker) -> None:
        self.broker = broker
        self.delivered: list[Publication] = []
        self.events: list[tuple[str, bytes, str]] = []
        self._changed = asyncio.Event()
        broker.on_event = self.event

    def deliver(self, publications: list[Publication]) -> None:
        self.delivered.extend(publications)
        self._changed.set()

    def event(self, room: str, payload: bytes, exclude: str) -> None:
        self.events.append((room, payload, exclude))
        self._changed.set()

    def offsets(self, room: str) -> list[int]:
        return [pub.offset for pub in self.delivered if pub.room == room]

    async def until(self, done: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait (woken by each delivery or event) until ``done()``."""
        async with asyncio.timeout(timeout):
            while not done():
                self._changed.clear()
                await self._changed.wait()

    async def wait_for(self, room: str, count: int, until: int = 0) -> list[int]:
        """The offsets delivered for ``room`` once there are ``count`` of them (and one
        of at least ``until``)."""

        def done() -> bool:
            offsets = self.offsets(room)
            return len(offsets) >= count and max(offsets, default=0) >= until

        try:
            await self.until(done)
        except TimeoutError:
            pytest.fail(f"{room}: waited for {count} (up to {until}), got {self.offsets(room)}")
        return self.offsets(room)

    def publish(self, room: str, n: int, ts: int | None = None) -> asyncio.Future[Publication]:
        return self.broker.publish(draft(room, n, ts))


Connect = Callable[..., Awaitable[Node]]


class Relay:
    """A TCP relay to NATS that can cut its clients off, and refuses new ones meanwhile."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.open = True
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return f"nats://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    def cut(self) -> None:
        self.open = False
        for writer in self.writers:
            writer.close()
        self.writers.clear()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


def draft(room: str, n: int, ts: int | None = None) -> Draft:
    data = msgspec.Raw(json.dumps({"n": n}).encode())
    sender = Member(f"s{n}", "alice") if n % 2 else None
    return Draft(room, data, sender, now_ms() if ts is None else ts)


def has_events(node: Node, count: int) -> bool:
    return len(node.events) >= count


def numbers(page: Page) -> list[int]:
    return [offset for offset, _ in page.entries]


@pytest.fixture
async def connect(nats_server: NatsProcess) -> AsyncIterator[Connect]:
    nodes: list[Node] = []

    async def make(**options: Any) -> Node:
        options.setdefault("reconnect_wait", 0.1)
        node = Node(NatsBroker(nats_server.url, **options))
        await node.broker.connect(node.deliver)
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        await node.broker.close()


async def test_two_nodes_share_one_gapless_sequence_per_room(connect: Connect) -> None:
    a, b = await connect(), await connect()
    await a.broker.subscribe("lobby")
    await b.broker.subscribe("lobby")
    futures = [(a if n % 2 else b).publish("lobby", n) for n in range(200)]
    results = await asyncio.gather(*futures)
    assert sorted(pub.offset for pub in results) == list(range(1, 201))
    epoch = a.broker.epoch
    assert b.broker.epoch == epoch and {pub.epoch for pub in results} == {epoch}
    for parity in (0, 1):  # each node stores its drafts in the order of its calls
        own = [pub.offset for n, pub in enumerate(results) if n % 2 == parity]
        assert own == sorted(own)
    for n, pub in enumerate(results):
        sent = draft("lobby", n)
        expected = encode_message("lobby", epoch, pub.offset, sent.data, sent.sender, 0)
        assert json.loads(pub.payload) | {"ts": 0} == json.loads(expected)
    by_offset = {pub.offset: pub.payload for pub in results}
    for node in (a, b):
        assert await node.wait_for("lobby", 200) == list(range(1, 201))
        assert {pub.offset: pub.payload for pub in node.delivered} == by_offset
    page = await b.broker.read("lobby", after=0, limit=1000)
    assert page.position == Position(epoch, 200)
    assert page.entries == sorted(by_offset.items())


async def test_racing_nodes_that_do_not_subscribe_retry_without_gaps(connect: Connect) -> None:
    a, b = await connect(), await connect()
    assert (await a.publish("r", 0)).offset == 1
    assert (await b.publish("r", 1)).offset == 2
    assert (await a.publish("r", 2)).offset == 3  # a's idea of the room is stale: retried
    results = await asyncio.gather(*((a if n % 2 else b).publish("r", n) for n in range(100)))
    assert sorted(pub.offset for pub in results) == list(range(4, 104))
    assert a.delivered == b.delivered == []  # neither subscribed


async def test_rooms_are_independent_whatever_their_names(connect: Connect) -> None:
    rooms = ["eu", "eu.lobby", "eu-lobby", "a:b@c_d.e-f", "x" * 128]
    a, b = await connect(), await connect()
    for room in rooms:
        await b.broker.subscribe(room)
    futures = [(a, b)[n % 2].publish(rooms[n % 5], n) for n in range(150)]
    results = await asyncio.gather(*futures)
    for room in rooms:
        assert sorted(p.offset for p in results if p.room == room) == list(range(1, 31))
        assert await b.wait_for(room, 30) == list(range(1, 31))
        page = await a.broker.read(room, after=0, limit=100)
        assert numbers(page) == list(range(1, 31))
        assert all(json.loads(payload)["room"] == room for _, payload in page.entries)


@given(st.from_regex(ROOM_PATTERN, fullmatch=True))
def test_room_tokens_are_one_safe_token_and_reversible(room: str) -> None:
    token = room_token(room)
    assert token and all(c.isascii() and (c.isalnum() or c in "_-") for c in token)
    assert room_of_token(token) == room


async def test_read_after_before_and_limit(connect: Connect) -> None:
    a = await connect()
    # Two rooms interleaved unevenly, so a room's stream sequences are not consecutive.
    for n in range(90):
        await a.publish("lobby" if n % 3 or n > 80 else "other", n)
    top = sum(1 for n in range(90) if n % 3 or n > 80)  # messages of "lobby": 63
    epoch = a.broker.epoch
    assert await a.broker.read("lobby", limit=0) == Page(Position(epoch, top), [])
    assert await a.broker.read("nobody", limit=10) == Page(Position(epoch, 0), [])
    assert await a.broker.read("nobody", after=0, limit=10) == Page(Position(epoch, 0), [])
    for limit in (1, 4, 64):
        for k in range(top + 2):
            after = numbers(await a.broker.read("lobby", after=k, limit=limit))
            assert after == list(range(k + 1, min(top, k + limit) + 1)), (k, limit)
            page = await a.broker.read("lobby", before=k, limit=limit)
            assert numbers(page) == list(range(max(1, k - limit), min(k, top + 1))), (k, limit)
            assert page.position == Position(epoch, top)
    newest = await a.broker.read("lobby", limit=3)
    assert numbers(newest) == [61, 62, 63]
    assert [json.loads(payload)["offset"] for _, payload in newest.entries] == [61, 62, 63]


async def test_history_keeps_the_newest_size_messages_and_the_counter(connect: Connect) -> None:
    a = await connect(size=5)
    assert [(await a.publish("r", n)).offset for n in range(8)] == list(range(1, 9))
    assert numbers(await a.broker.read("r", after=0, limit=100)) == [4, 5, 6, 7, 8]
    assert numbers(await a.broker.read("r", after=1, limit=2)) == [4, 5]
    assert numbers(await a.broker.read("r", before=6, limit=10)) == [4, 5]
    assert numbers(await a.broker.read("r", before=4, limit=10)) == []
    b = await connect(size=6)  # a node with another history size updates the stream
    assert (await b.publish("r", 8)).offset == 9
    assert numbers(await b.broker.read("r", after=0, limit=100)) == [4, 5, 6, 7, 8, 9]
    assert numbers(await a.broker.read("r", after=0, limit=100)) == [5, 6, 7, 8, 9]  # its 5
    assert (await a.publish("r", 9)).offset == 10
    assert numbers(await b.broker.read("r", after=0, limit=100)) == [5, 6, 7, 8, 9, 10]


async def test_settings_choose_the_servers_stream_and_prefix(nats_server: NatsProcess) -> None:
    url = f"{nats_server.url}?stream=CHAT&prefix=acme.chat"
    settings = Settings(broker=url, history="memory", history_size=3, node_id="n1")
    broker = NatsBroker.from_settings(settings)
    await broker.connect(lambda _: None)
    try:
        assert (await broker.publish(draft("eu.lobby", 1))).offset == 1
        nc = await nats.connect(nats_server.url)
        info = await nc.jetstream().stream_info("CHAT")
        await nc.close()
        assert info.config.subjects == ["acme.chat.room.>"]
        assert info.config.max_msgs_per_subject == 3
        assert info.state.messages == 1
    finally:
        await broker.close()


async def test_expired_messages_are_not_read_and_keep_their_offsets(connect: Connect) -> None:
    a = await connect(ttl=60)
    old = now_ms() - 120_000
    for n in range(3):
        await a.publish("r", n, ts=old)
    for n in range(3, 5):
        await a.publish("r", n)
    assert numbers(await a.broker.read("r", after=0, limit=100)) == [4, 5]
    assert numbers(await a.broker.read("r", limit=100)) == [4, 5]
    assert (await a.broker.read("r", limit=0)).position.offset == 5
    assert (await a.publish("r", 5)).offset == 6


async def test_epoch_survives_restarts_and_changes_with_the_stream(
    connect: Connect, nats_server: NatsProcess
) -> None:
    a = await connect()
    for n in range(3):
        await a.publish("r", n)
    epoch = a.broker.epoch
    await a.broker.close()
    b = await connect()
    await b.broker.subscribe("r")
    assert b.broker.epoch == epoch
    assert (await b.broker.read("r", limit=0)).position == Position(epoch, 3)
    assert (await b.publish("r", 3)).offset == 4
    nc = await nats.connect(nats_server.url)
    assert await nc.jetstream().delete_stream("ROOMCAST")
    await nc.close()
    first = await b.publish("r", 4)  # the stream is gone: b makes a new one
    assert first.offset == 1 and first.epoch != epoch
    assert b.broker.epoch == first.epoch
    assert (await b.broker.read("r", limit=0)).position == Position(first.epoch, 1)
    assert await b.wait_for("r", 2) == [4, 1]
    assert [p.epoch for p in b.delivered] == [epoch, first.epoch]
    c = await connect()
    assert c.broker.epoch == first.epoch
    assert (await c.publish("r", 5)).offset == 2


async def test_no_delivery_after_unsubscribe(connect: Connect) -> None:
    a, b = await connect(), await connect()
    await b.broker.subscribe("r")
    await b.broker.subscribe("sentinel")
    await a.publish("r", 0)
    assert await b.wait_for("r", 1) == [1]
    await b.broker.unsubscribe("r")
    await a.publish("r", 1)
    await a.publish("r", 2)
    await a.publish("sentinel", 3)
    # Stored after r's messages, so it would reach b after them were b still subscribed.
    assert await b.wait_for("sentinel", 1) == [1]
    assert b.offsets("r") == [1]
    await b.broker.subscribe("r")
    await a.publish("r", 4)
    assert await b.wait_for("r", 2) == [1, 4]
    assert a.delivered == []


async def test_nats_down_fails_fast_and_offsets_continue_after_restart(
    connect: Connect, nats_server: NatsProcess
) -> None:
    a, b = await connect(), await connect()
    for node in (a, b):
        await node.broker.subscribe("r")
    for n in range(5):
        await (a, b)[n % 2].publish("r", n)
    assert await b.wait_for("r", 5) == [1, 2, 3, 4, 5]
    pending = [a.publish("r", n) for n in range(5, 25)]
    assert (await pending[0]).offset == 6
    nats_server.kill()  # with publishes in flight
    started = time.monotonic()
    outcomes = await asyncio.gather(*pending, return_exceptions=True)
    assert time.monotonic() - started < 2.0  # not the 5 s request timeout
    assert isinstance(outcomes[-1], BrokerError)
    stored = [o.offset for o in outcomes if isinstance(o, Publication)]
    assert stored == list(range(6, 6 + len(stored)))
    await asyncio.wait_for(a.broker.offline.wait(), 5)
    future = a.publish("r", 30)  # while disconnected: at once
    assert future.done() and isinstance(future.exception(), BrokerError)
    with pytest.raises(BrokerError):
        await a.broker.read("r", limit=0)
    nats_server.start()  # the same port and store
    for node in (a, b):
        await asyncio.wait_for(node.broker.online.wait(), 10)
    # Failed publishes may have been stored all the same: never twice, never a gap.
    top = (await a.broker.read("r", limit=0)).position.offset
    assert top >= 5 + len(stored)
    results = await asyncio.gather(*((a, b)[n % 2].publish("r", n) for n in range(40, 46)))
    assert sorted(pub.offset for pub in results) == list(range(top + 1, top + 7))
    assert numbers(await a.broker.read("r", after=0, limit=100)) == list(range(1, top + 7))
    for node in (a, b):  # the subscriptions came back with the connection
        delivered = await node.wait_for("r", 1, until=top + 6)
        assert delivered == sorted(set(delivered))  # in order, no duplicate
        assert delivered[-6:] == list(range(top + 1, top + 7))


async def test_early_messages_wait_for_those_before_them(
    connect: Connect, nats_server: NatsProcess
) -> None:
    b = await connect()
    await b.broker.subscribe("r")
    live = b.broker.js.subject("r", "live")

    def republished(offset: int) -> bytes:  # as the stream republishes a stored message
        return encode_message("r", b.broker.epoch, offset, msgspec.Raw(b"0"), None, now_ms())

    nc = await nats.connect(nats_server.url)
    for offset in (2, 1, 5):  # 2 before 1; 3 and 4 never come, and history has neither
        await nc.publish(live, republished(offset))
    await nc.flush()
    await nc.close()
    assert await b.wait_for("r", 3) == [1, 2, 5]


async def test_a_node_cut_off_catches_up_from_history_on_reconnect(
    connect: Connect, nats_server: NatsProcess
) -> None:
    a = await connect()
    relay = Relay(nats_server.port)
    b = Node(NatsBroker(await relay.start(), reconnect_wait=0.1))
    await b.broker.connect(b.deliver)
    try:
        await b.broker.subscribe("r")
        for n in range(3):
            await a.publish("r", n)
        assert await b.wait_for("r", 3) == [1, 2, 3]
        relay.cut()
        await asyncio.wait_for(b.broker.offline.wait(), 5)
        for n in range(3, 6):  # stored while b is away: it never sees them live
            await a.publish("r", n)
        relay.open = True
        assert await b.wait_for("r", 6) == [1, 2, 3, 4, 5, 6]
        await a.publish("r", 6)
        assert await b.wait_for("r", 7) == [1, 2, 3, 4, 5, 6, 7]
    finally:
        await b.broker.close()
        await relay.close()


async def test_close_stores_what_is_pending(connect: Connect) -> None:
    a = await connect()
    futures = [a.publish(f"room{n % 3}", n) for n in range(30)]
    await a.broker.close()
    assert all(future.done() for future in futures)
    for room in ("room0", "room1", "room2"):
        assert [f.result().offset for f in futures if f.result().room == room] == list(range(1, 11))
    with pytest.raises(BrokerError):
        await a.publish("room0", 30)
    b = await connect()
    assert numbers(await b.broker.read("room1", after=0, limit=100)) == list(range(1, 11))


async def test_a_broker_starts_without_nats_and_connects_when_it_comes(tmp_path: Path) -> None:
    server = NatsProcess(tmp_path / "late")
    node = Node(NatsBroker(server.url, reconnect_wait=0.1))
    started = time.monotonic()
    await node.broker.connect(node.deliver)  # returns at once, goes on trying
    try:
        assert time.monotonic() - started < 2 and not node.broker.available
        future = node.publish("r", 0)
        assert future.done() and isinstance(future.exception(), BrokerError)
        with pytest.raises(BrokerError):
            await node.broker.read("r", limit=0)
        with pytest.raises(BrokerError):
            await node.broker.subscribe("r")
        server.start()
        assert await node.broker.wait_connected(10)
        await node.broker.subscribe("r")
        assert (await node.publish("r", 1)).offset == 1
        assert await node.wait_for("r", 1) == [1]
    finally:
        await node.broker.close()
        server.close()
    assert not node.broker.available


async def test_events_reach_every_subscribed_node_and_are_not_stored(connect: Connect) -> None:
    a, b, c = await connect(), await connect(), await connect()
    await a.broker.subscribe("r")
    await b.broker.subscribe("r")
    await c.broker.subscribe("other")
    await a.publish("r", 0)
    await b.broker.broadcast("r", b'{"type":"joined"}', "s1")
    await b.broker.broadcast("r", b'{"type":"left"}', "")
    await b.broker.broadcast("other", b'{"type":"left"}', "s2")
    for node in (a, b):
        await node.until(partial(has_events, node, 2))
        assert node.events == [("r", b'{"type":"joined"}', "s1"), ("r", b'{"type":"left"}', "")]
    await c.until(partial(has_events, c, 1))  # sent after r's: c would have them first
    assert c.events == [("other", b'{"type":"left"}', "s2")]
    assert numbers(await c.broker.read("r", after=0, limit=10)) == [1]


async def test_flush_waits_for_every_publish_so_far(connect: Connect) -> None:
    a = await connect()
    futures = [a.publish(f"room{n % 4}", n) for n in range(40)]
    await a.broker.flush()
    assert all(future.done() for future in futures)
    assert sorted(f.result().offset for f in futures if f.result().room == "room3") == list(
        range(1, 11)
    )


async def test_a_read_that_finds_no_stream_for_a_moment_reads_it_once_found(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = await connect()
    for n in range(3):
        await a.publish("r", n)
    last = a.broker.js.last
    calls = 0

    async def no_stream_at_first(subject: str) -> Head | None:
        nonlocal calls
        calls += 1
        if calls == 1:  # as JetStream answers while a server restarts or a leader moves
            raise NoStream("no JetStream stream answered")
        return await last(subject)

    monkeypatch.setattr(a.broker.js, "last", no_stream_at_first)
    page = await a.broker.read("r", after=1, limit=10)  # the same stream: not an empty room
    assert page.position == Position(a.broker.epoch, 3)
    assert numbers(page) == [2, 3]

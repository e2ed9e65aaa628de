"""The Redis broker against real redis-server processes of the test's own."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from roomcast.brokers.base import Draft, Publication
from roomcast.brokers.redis import RedisBroker
from roomcast.exceptions import BrokerError
from roomcast.history.base import now_ms
from roomcast.protocol import Member, encode_message
from roomcast.testing import RedisProcess, free_port

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis")


class Collector:
    """A broker's deliver callback that can be waited on."""

    def __init__(self) -> None:
        self.publications: list[Publication] = []
        self._changed = asyncio.Event()

    def __call__(self, batch: list[Publication]) -> None:
        self.publications.extend(batch)
        self._changed.set()

    def offsets(self, room: str) -> list[int]:
        return [p.offset for p in self.publications if p.room == room]

    async def wait_for(self, room: str, count: int, timeout: float = 10.0) -> list[int]:
        async with asyncio.timeout(timeout):
            while len(self.offsets(room)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.offsets(room)


StartBroker = Callable[..., Awaitable[tuple[RedisBroker, Collector]]]


@pytest.fixture
async def brokers() -> AsyncIterator[StartBroker]:
    started: list[RedisBroker] = []

    async def start(url: str, wait: bool = True, **kwargs: Any) -> tuple[RedisBroker, Collector]:
        broker = RedisBroker(url, **kwargs)
        collector = Collector()
        await broker.connect(collector)
        started.append(broker)
        if wait:
            assert await broker.wait_connected(10)
        return broker, collector

    yield start
    for broker in started:
        await broker.close()


def draft(room: str, n: int, sender: Member | None = None) -> Draft:
    return Draft(room, msgspec.Raw(f'{{"n":{n}}}'.encode()), sender, 1700000000000 + n)


async def test_two_nodes_share_gapless_offsets(
    redis_server: RedisProcess, brokers: StartBroker
) -> None:
    (a, got_a), (b, got_b) = await brokers(redis_server.url), await brokers(redis_server.url)
    await a.subscribe("r")
    await b.subscribe("r")
    futures = []
    for n in range(100):
        futures.append((a if n % 2 else b).publish(draft("r", n)))
    results = await asyncio.gather(*futures)
    assert sorted(p.offset for p in results) == list(range(1, 101))
    assert await got_a.wait_for("r", 100) == list(range(1, 101))
    assert await got_b.wait_for("r", 100) == list(range(1, 101))
    assert [p.payload for p in got_a.publications] == [p.payload for p in got_b.publications]
    by_offset = {p.offset: p for p in results}
    assert all(by_offset[p.offset].payload == p.payload for p in got_a.publications)


async def test_the_payload_is_exactly_the_message_event(
    redis_server: RedisProcess, brokers: StartBroker
) -> None:
    broker, _ = await brokers(redis_server.url)
    sender = Member("s1", "alice")
    pub = await broker.publish(draft("room:x@y", 7, sender))
    assert pub.payload == encode_message(
        "room:x@y", pub.epoch, 1, msgspec.Raw(b'{"n":7}'), sender, 1700000000007
    )
    page = await broker.read("room:x@y", after=0, limit=10)
    assert page.entries == [(1, pub.payload)]
    assert page.position.epoch == pub.epoch


async def test_read_after_before_limit_and_retention(
    redis_server: RedisProcess, brokers: StartBroker
) -> None:
    broker, _ = await brokers(redis_server.url, history_size=5)
    empty = await broker.read("h", limit=0)
    assert empty.position.offset == 0
    for n in range(8):
        await broker.publish(draft("h", n))
    page = await broker.read("h", after=0, limit=100)
    assert [o for o, _ in page.entries] == [4, 5, 6, 7, 8]
    assert page.position.offset == 8
    assert page.position.epoch == empty.position.epoch
    newest = await broker.read("h", limit=2)
    assert [o for o, _ in newest.entries] == [7, 8]
    before = await broker.read("h", before=7, limit=10)
    assert [o for o, _ in before.entries] == [4, 5, 6]
    after = await broker.read("h", after=6, limit=1)
    assert [o for o, _ in after.entries] == [7]


async def test_unsubscribed_rooms_are_not_delivered(
    redis_server: RedisProcess, brokers: StartBroker
) -> None:
    broker, got = await brokers(redis_server.url)
    await broker.subscribe("a")
    await broker.subscribe("b")
    await broker.publish(draft("a", 1))
    await got.wait_for("a", 1)
    await broker.unsubscribe("a")
    await broker.publish(draft("a", 2))
    await broker.publish(draft("b", 3))
    assert await got.wait_for("b", 1) == [1]
    assert got.offsets("a") == [1]


async def test_redis_restart_publishes_fail_then_resume_without_gap(
    redis_server: RedisProcess, brokers: StartBroker
) -> None:
    (a, got_a), (b, _) = await brokers(redis_server.url), await brokers(redis_server.url)
    await a.subscribe("r")
    for n in range(3):
        await b.publish(draft("r", n))
    await got_a.wait_for("r", 3)
    redis_server.stop()
    with pytest.raises(BrokerError):
        async with asyncio.timeout(8):
            while True:  # until the broker notices; never a silent drop or a hang
                await b.publish(draft("r", 99))
    redis_server.start()
    assert await a.wait_connected(15)
    assert await b.wait_connected(15)
    published = [await b.publish(draft("r", n)) for n in range(3, 6)]
    assert [p.offset for p in published] == [4, 5, 6]
    assert await got_a.wait_for("r", 6) == [1, 2, 3, 4, 5, 6]


async def test_missed_messages_are_caught_up_after_a_pubsub_reconnect(
    redis_server: RedisProcess, brokers: StartBroker
) -> None:
    (a, got_a), (b, _) = await brokers(redis_server.url), await brokers(redis_server.url)
    await a.subscribe("r")
    await b.publish(draft("r", 0))
    await got_a.wait_for("r", 1)
    killed = await b._redis.client_kill_filter(_type="pubsub")  # cut every pub/sub link
    assert killed >= 1
    for n in range(1, 4):  # published while a's pub/sub link is down or coming back
        await b.publish(draft("r", n))
    assert await got_a.wait_for("r", 4) == [1, 2, 3, 4]


async def test_unreachable_at_start_then_reachable(tmp_path: Path, brokers: StartBroker) -> None:
    port = free_port()
    broker, _ = await brokers(f"redis://127.0.0.1:{port}/0", wait=False)
    assert not broker.available
    with pytest.raises(BrokerError, match="not stored"):
        await broker.publish(draft("r", 1))
    server = RedisProcess(tmp_path / "late", port=port).start()
    try:
        assert await broker.wait_connected(15)
        assert (await broker.publish(draft("r", 1))).offset == 1
    finally:
        server.stop()


async def test_each_rooms_size_and_ttl_come_from_limits(
    redis_server: RedisProcess, brokers: StartBroker
) -> None:
    def limits(room: str) -> tuple[int, float]:
        return (3, 0.0) if room.startswith("small:") else (10, 60.0)

    def now(room: str, ts: int | None = None) -> Draft:
        return Draft(room, msgspec.Raw(b"0"), None, now_ms() if ts is None else ts)

    async def offsets(broker: RedisBroker, room: str, **where: int) -> list[int]:
        return [offset for offset, _ in (await broker.read(room, limit=100, **where)).entries]

    a, _ = await brokers(redis_server.url, limits=limits)
    for room in ("small:a", "big:a"):
        for _ in range(12):
            await a.publish(now(room))
    assert await offsets(a, "small:a", after=0) == [10, 11, 12]
    assert await offsets(a, "big:a") == list(range(3, 13))
    # A node whose namespace for big:* is smaller shows that many, whatever is stored.
    b, _ = await brokers(redis_server.url, history_size=4)
    assert await offsets(b, "big:a") == [9, 10, 11, 12]
    assert await offsets(b, "big:a", after=2) == [9, 10, 11, 12]
    assert await offsets(b, "big:a", before=11) == [9, 10]
    assert (await a.publish(now("big:a", ts=1_000))).offset == 13  # stamped in 1970
    await a.publish(now("big:a"))
    assert await offsets(a, "big:a", after=0) == [14]  # 13 expired, and hides the older
    assert await offsets(a, "big:a") == [14]
    assert await offsets(b, "big:a", after=0) == [11, 12, 13, 14]  # no TTL on b
    assert 0 < await b._redis.pttl("roomcast:{big:a}:log") <= 60_000
    await b.publish(now("big:a"))  # b keeps big:* for ever: the log no longer expires
    assert await b._redis.pttl("roomcast:{big:a}:log") == -1

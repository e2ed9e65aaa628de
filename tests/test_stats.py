"""The admin page's numbers of a node (roomcast.stats): room rates over the last minute,
the busiest and largest rooms, the plotted samples, the event loop's lag and the
broker's round trip. In process, sampled at chosen times."""

from __future__ import annotations

import asyncio
import json
import time

import msgspec

from roomcast.metrics import Histogram
from roomcast.node import Node
from roomcast.session import Session
from roomcast.stats import RoomStats, Snapshot, Stats
from roomcast.testing import fake_session
from roomcast.transports.base import FakeTransport


async def joined(node: Node, room: str, count: int) -> list[tuple[Session, FakeTransport]]:
    """``count`` sessions that joined ``room``."""
    members = [await fake_session(node, f"u{n}") for n in range(count)]
    for session, transport in members:
        await session.handle(json.dumps({"type": "join", "room": room, "id": "j"}))
        assert (await transport.until("ok"))["room"] == room
    return members


async def publish(node: Node, room: str, count: int) -> None:
    for n in range(count):
        await node.publish(room, msgspec.Raw(b"%d" % n), None)


def quiet_stats(node: Node) -> tuple[Stats, float]:
    """Stats of the node that only the test samples (the node's own task is stopped),
    and the time of their first sample, from which the test's samples go on."""
    node.stats.stop()
    stats, start = Stats(node), time.monotonic()
    stats.sample(start)
    return stats, start


async def test_busiest_by_rate_and_largest_by_members(node: Node) -> None:
    stats, start = quiet_stats(node)
    await joined(node, "big", 3)
    await joined(node, "busy", 1)
    await publish(node, "big", 1)
    await publish(node, "busy", 10)
    stats.sample(start + 5.0)
    assert stats.rates() == {"big": 0.2, "busy": 2.0}
    snapshot = stats.snapshot()
    assert snapshot.node == "n1"
    assert snapshot.state == "ready"
    assert snapshot.broker is True
    assert snapshot.connections == {"fake": 4}
    assert snapshot.rooms == 2
    assert snapshot.busiest == [RoomStats("busy", 1, 2.0), RoomStats("big", 3, 0.2)]
    assert snapshot.largest == [RoomStats("big", 3, 0.2), RoomStats("busy", 1, 2.0)]
    assert stats.snapshot(top=1).busiest == [RoomStats("busy", 1, 2.0)]


async def test_a_room_rate_covers_the_last_minute_only(node: Node) -> None:
    stats, start = quiet_stats(node)
    await joined(node, "r", 1)
    await publish(node, "r", 12)
    stats.sample(start + 5.0)
    await publish(node, "r", 6)
    stats.sample(start + 10.0)
    assert stats.rates() == {"r": 18 / 10}
    for n in range(3, 13):  # 60 s after the first sample: all of it still counts
        stats.sample(start + 5.0 * n)
    assert stats.rates() == {"r": 18 / 60}
    stats.sample(start + 65.0)  # the first 5 s (12 messages) leave the minute
    assert stats.rates() == {"r": 6 / 60}
    stats.sample(start + 70.0)
    assert stats.rates() == {}
    assert stats.snapshot().busiest == []
    assert stats.snapshot().largest == [RoomStats("r", 1, 0.0)]


async def test_samples_for_the_plot(node: Node) -> None:
    stats, start = quiet_stats(node)
    await joined(node, "r", 2)
    await joined(node, "s", 1)
    before = time.time()
    await publish(node, "r", 10)
    await publish(node, "s", 5)
    stats.sample(start + 5.0)
    stats.sample(start + 10.0)
    first, second = stats.snapshot().series
    assert first.messages == 15 / 5.0
    assert first.deliveries == (10 * 2 + 5 * 1) / 5.0
    assert first.connections == 3
    assert before <= first.ts <= second.ts <= time.time()
    assert (second.messages, second.deliveries) == (0.0, 0.0)
    window = Stats(node, interval=5.0, window=15.0)
    for n in range(6):
        window.sample(start + n)
    assert len(window.series) == 3  # the last 15 s of samples


async def test_a_room_that_emptied_leaves_the_lists(node: Node) -> None:
    stats, start = quiet_stats(node)
    [(session, _)] = await joined(node, "gone", 1)
    await publish(node, "gone", 4)
    stats.sample(start + 5.0)
    assert [room.room for room in stats.snapshot().busiest] == ["gone"]
    node.close_session(session)
    snapshot = stats.snapshot()
    assert (snapshot.busiest, snapshot.largest, snapshot.rooms) == ([], [], 0)


async def test_the_snapshot_encodes_as_json(node: Node) -> None:
    stats, start = quiet_stats(node)
    await joined(node, "r", 1)
    await publish(node, "r", 1)
    stats.sample(start + 1.0)
    decoded = msgspec.json.decode(msgspec.json.encode(stats.snapshot()), type=Snapshot)
    assert decoded.busiest == [RoomStats("r", 1, 1.0)]
    assert decoded.connections == {"fake": 1}


class Watched(Histogram):
    """A histogram that says when it gets an observation."""

    def __init__(self) -> None:
        super().__init__()
        self.observed = asyncio.Event()
        self.last = 0.0

    def observe(self, value: float) -> None:
        super().observe(value)
        self.last = value
        self.observed.set()


async def test_the_task_measures_loop_lag_and_pings_the_broker(node: Node) -> None:
    node.stats.stop()
    node.meter.loop_lag = lag = Watched()
    node.meter.broker_rtt = rtt = Watched()
    stats = Stats(node, interval=0.05, tick=0.02)
    stats.start()
    try:
        await asyncio.wait_for(rtt.observed.wait(), 5)  # pinged after the first sample
        assert len(stats.series) >= 1
        assert 0 <= rtt.last < 1
        time.sleep(0.3)  # noqa: ASYNC251  # hold the event loop on purpose: a lag
        lag.observed.clear()
        await asyncio.wait_for(lag.observed.wait(), 5)
        assert lag.last >= 0.25
        assert stats.loop_lag == lag.last
        assert lag.total >= 0.25
    finally:
        stats.stop()

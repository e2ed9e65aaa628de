"""What a node is doing, for the admin page: its connections, its busiest and largest
rooms with their message rates, and a few minutes of samples to plot.

Fan-out adds each room's messages to ``Room.count`` (:meth:`roomcast.metrics.Meter.fanout`);
every ``interval`` seconds :meth:`Stats.sample` moves those counts into a ring covering
the last minute (a room's rate) and appends the node's messages, deliveries and
connections per second to a ring of the last ``window`` seconds. The same task measures
the event loop's lag every ``tick`` and the broker's round trip at each sample.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Final

import msgspec

from roomcast.metrics import connections

if TYPE_CHECKING:
    from roomcast.hub import Room
    from roomcast.node import Node

log = logging.getLogger("roomcast.stats")

INTERVAL: Final = 5.0  # seconds between samples
WINDOW: Final = 600.0  # seconds of node-wide samples kept
RATE_WINDOW: Final = 60.0  # seconds a room's rate is taken over
TICK: Final = 1.0  # seconds between two measures of the event loop's lag
TOP: Final = 10  # rooms in each list of a snapshot
PING_TIMEOUT: Final = 5.0


class RoomStats(msgspec.Struct, frozen=True):
    room: str
    members: int  # on this node
    rate: float  # messages per second fanned out here, over the last minute


class Sample(msgspec.Struct, frozen=True):
    ts: float  # unix time
    messages: float  # per second, fanned out (once per message)
    deliveries: float  # per second, written to members (messages x members)
    connections: int


class Snapshot(msgspec.Struct, frozen=True):
    node: str
    ts: float
    state: str
    broker: bool  # reachable
    connections: dict[str, int]  # by transport
    rooms: int  # with members here
    busiest: list[RoomStats]  # by rate
    largest: list[RoomStats]  # by members
    series: list[Sample]  # oldest first, every ``interval`` seconds
    interval: float
    loop_lag: float  # seconds, the latest measure


class Stats:
    """The admin page's numbers of one node; :meth:`snapshot` takes them."""

    def __init__(
        self, node: Node, *, interval: float = INTERVAL, window: float = WINDOW, tick: float = TICK
    ) -> None:
        self.node = node
        self.interval = interval
        self.tick = tick
        self.series: deque[Sample] = deque(maxlen=max(1, round(window / interval)))
        # (seconds covered, messages per room) of each sample of the last minute
        self._spans: deque[tuple[float, dict[str, int]]] = deque(
            maxlen=max(1, round(RATE_WINDOW / interval))
        )
        self._last: float | None = None  # monotonic time of the previous sample
        self._totals = (0, 0)  # the meter's messages and deliveries then
        self.loop_lag = 0.0
        self._task: asyncio.Task[None] | None = None
        self._probe: asyncio.Task[None] | None = None

    # -- sampling ---------------------------------------------------------------------

    def sample(self, now: float | None = None) -> None:
        """Take the counts since the previous sample (the first one only starts)."""
        now = time.monotonic() if now is None else now
        counts: dict[str, int] = {}
        for room in self.node.hub:
            if room.count:
                counts[room.name], room.count = room.count, 0
        meter = self.node.meter
        totals = (meter.messages, meter.deliveries)
        if self._last is not None and now > self._last:
            span = now - self._last
            self._spans.append((span, counts))
            messages, deliveries = (
                new - old for new, old in zip(totals, self._totals, strict=True)
            )
            rates = (messages / span, deliveries / span)
            self.series.append(Sample(time.time(), *rates, len(self.node.sessions)))
        self._last, self._totals = now, totals

    def rates(self) -> dict[str, float]:
        """Messages per second of each room that had some in the last minute."""
        covered = sum(span for span, _ in self._spans)
        if not covered:
            return {}
        totals: Counter[str] = Counter()
        for _, counts in self._spans:
            totals.update(counts)
        return {room: count / covered for room, count in totals.items()}

    def snapshot(self, top: int = TOP) -> Snapshot:
        node, hub = self.node, self.node.hub
        rates = self.rates()

        def entry(room: Room) -> RoomStats:
            return RoomStats(room.name, len(room.members), round(rates.get(room.name, 0.0), 3))

        active = (room for name in rates if (room := hub.get(name)) is not None)
        busiest = heapq.nlargest(top, active, key=lambda room: rates[room.name])
        largest = heapq.nlargest(top, hub, key=lambda room: len(room.members))
        return Snapshot(
            node=node.settings.node_id, ts=time.time(), state=node.state,
            broker=node.broker.available, connections=dict(connections(node)),
            rooms=len(hub.rooms), busiest=[entry(room) for room in busiest],
            largest=[entry(room) for room in largest], series=list(self.series),
            interval=self.interval, loop_lag=self.loop_lag,
        )  # fmt: skip

    # -- the task ---------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        for task in (self._task, self._probe):
            if task is not None:
                task.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self.sample()
        due = loop.time() + self.interval
        while True:
            before = loop.time()
            await asyncio.sleep(self.tick)
            now = loop.time()
            self.loop_lag = max(0.0, now - before - self.tick)
            self.node.meter.loop_lag.observe(self.loop_lag)
            if now >= due:
                due = max(due + self.interval, now)
                self.sample()
                if self._probe is None or self._probe.done():
                    self._probe = loop.create_task(self._ping())

    async def _ping(self) -> None:
        start = time.perf_counter()
        try:
            await asyncio.wait_for(self.node.broker.ping(), PING_TIMEOUT)
        except Exception as exc:  # an outage shows in roomcast_broker_up and the log
            log.debug("broker ping failed: %r", exc)
            return
        self.node.meter.broker_rtt.observe(time.perf_counter() - start)


__all__ = ["RoomStats", "Sample", "Snapshot", "Stats"]

"""Prometheus metrics of a node: counters kept as plain numbers on the hot paths (a
:class:`Meter`), read by a collector only when ``GET /metrics`` is scraped.

Fan-out adds to a few integers once per fan-out, never once per member, and no lock is
taken: prometheus-client's own metric objects would cost a lock and a call per update.
Labels never name a room or a user (their number has no bound); per-room numbers are in
:mod:`roomcast.stats`. docs/operations.md lists every metric.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Final, TypeVar

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from roomcast.exceptions import CloseCode, ErrorCode

if TYPE_CHECKING:
    from roomcast.frame import Frame
    from roomcast.hub import Room
    from roomcast.node import Node

T = TypeVar("T")

TRANSPORTS: Final = ("websocket", "sse", "poll")
ORIGINS: Final = ("client", "api")
# Why the server closed a connection, by close code.
REASONS: Final = {
    CloseCode.SLOW_CONSUMER: "slow_consumer",
    CloseCode.HEARTBEAT_TIMEOUT: "heartbeat_timeout",
    CloseCode.TOKEN_EXPIRED: "token_expired",
    CloseCode.SERVICE_RESTART: "shutdown",
    CloseCode.ADMIN_DISCONNECT: "admin",
}
ERROR_CODES: Final = tuple(
    value for name, value in vars(ErrorCode).items() if name.isupper() and isinstance(value, str)
)
# Seconds: from a millisecond to 10 s (history appends, broker round trips, loop lag).
LATENCY_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class Histogram:
    """Counts of observations per bucket, without a lock (one event loop updates it)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative counts by upper bound (``le``), ending with ``+Inf``."""
        cumulative, running = [], 0
        for bound, count in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            cumulative.append((bound, float(running)))
        return cumulative


class Meter:
    """The counters of one node, updated where things happen."""

    __slots__ = (
        "append_latency", "broker_rtt", "bytes_out", "deliveries", "disconnects", "errors",
        "failed", "joins", "leaves", "loop_lag", "messages", "published",
    )  # fmt: skip

    def __init__(self) -> None:
        self.joins: Counter[str] = Counter()  # by transport
        self.leaves: Counter[str] = Counter()
        self.published: Counter[str] = Counter()  # stored, by origin
        self.failed: Counter[str] = Counter()  # not stored, by origin
        self.messages = 0  # messages fanned out (once per message and room)
        self.deliveries = 0  # messages written to members (messages x members)
        self.bytes_out = 0  # their JSON bytes x members
        self.disconnects: Counter[str] = Counter()  # by reason
        self.errors: Counter[str] = Counter()  # error answers, by code
        self.append_latency = Histogram()
        self.broker_rtt = Histogram()
        self.loop_lag = Histogram()

    def fanout(self, room: Room, frame: Frame) -> None:
        """``frame`` went to every member of ``room``: counted once for all of them."""
        payloads = frame.payloads
        events = len(payloads)
        members = len(room.members)
        size = len(payloads[0]) if events == 1 else sum(map(len, payloads))
        self.messages += events
        self.deliveries += events * members
        self.bytes_out += size * members
        room.count += events

    def track_publish(self, future: asyncio.Future[T], api: bool) -> asyncio.Future[T]:
        """Count ``future``'s publish when it is stored (or fails), and how long it took."""
        origin = "api" if api else "client"
        future.add_done_callback(partial(self._stored, origin, time.perf_counter()))
        return future

    def _stored(self, origin: str, start: float, future: asyncio.Future[T]) -> None:
        if future.cancelled() or future.exception() is not None:
            self.failed[origin] += 1
            return
        self.published[origin] += 1
        self.append_latency.observe(time.perf_counter() - start)

    def disconnected(self, code: int) -> None:
        """The server closed a connection with ``code``."""
        self.disconnects[REASONS.get(code, "other")] += 1

    def error(self, code: str) -> None:
        """An ``error`` frame or JSON error answer with ``code`` was sent."""
        self.errors[code if code in ERROR_CODES else "other"] += 1


# Counters with one label: name, meaning, label, its known values, the Meter's attribute.
LABELLED: Final = (
    ("roomcast_joins", "Sessions that joined a room, by transport (a long poll joins at "
     "each poll).", "transport", TRANSPORTS, "joins"),
    ("roomcast_leaves", "Sessions that left a room (or closed), by transport.", "transport",
     TRANSPORTS, "leaves"),
    ("roomcast_messages_published", "Messages stored, by who published them.", "origin",
     ORIGINS, "published"),
    ("roomcast_messages_failed", "Publishes that could not be stored, by origin.", "origin",
     ORIGINS, "failed"),
    ("roomcast_disconnects", "Connections the server closed, by reason.", "reason",
     tuple(REASONS.values()), "disconnects"),
    ("roomcast_errors", "Error answers (frames and HTTP), by error code.", "code", ERROR_CODES,
     "errors"),
)  # fmt: skip
# Counters without labels, and histograms: name, meaning, the Meter's attribute.
TOTALS: Final = (
    ("roomcast_messages_fanned_out", "Messages fanned out to this node's members (once "
     "per message).", "messages"),
    ("roomcast_messages_delivered", "Messages written to members: each message once per "
     "member.", "deliveries"),
    ("roomcast_delivered_bytes", "JSON bytes of the delivered messages (before framing).",
     "bytes_out"),
)  # fmt: skip
HISTOGRAMS: Final = (
    ("roomcast_history_append_seconds", "From a publish to its storage being acknowledged "
     "(the broker's commit).", "append_latency"),
    ("roomcast_broker_roundtrip_seconds", "A ping to the broker and its answer (every few "
     "seconds; about 0 on memory://).", "broker_rtt"),
    ("roomcast_event_loop_lag_seconds", "How late a periodic wakeup of the event loop was "
     "(every second).", "loop_lag"),
)  # fmt: skip


class NodeCollector:
    """Reads a node's meter, sessions and broker for a scrape."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node, meter = self.node, self.node.meter
        info = GaugeMetricFamily("roomcast_info", "This node (always 1).", labels=["node"])
        info.add_metric([node.settings.node_id], 1)
        yield info
        connected = GaugeMetricFamily(
            "roomcast_connections", "Open client connections by transport.", labels=["transport"]
        )
        yield _fill(connected, connections(node), TRANSPORTS)
        yield GaugeMetricFamily(
            "roomcast_rooms", "Rooms with members on this node.", value=len(node.hub.rooms)
        )
        for name, documentation, label, known, attribute in LABELLED:
            family = CounterMetricFamily(name, documentation, labels=[label])
            yield _fill(family, getattr(meter, attribute), known)
        for name, documentation, attribute in TOTALS:
            yield CounterMetricFamily(name, documentation, value=getattr(meter, attribute))
        for name, documentation, attribute in HISTOGRAMS:
            histogram: Histogram = getattr(meter, attribute)
            yield HistogramMetricFamily(
                name, documentation, buckets=histogram.buckets(), sum_value=histogram.total
            )
        yield GaugeMetricFamily(
            "roomcast_broker_up", "1 while the broker is reachable.", value=node.broker.available
        )
        yield CounterMetricFamily(
            "roomcast_broker_reconnects",
            "Connections to the broker made again after one was lost or failed.",
            value=node.broker.reconnects,
        )


def connections(node: Node) -> Counter[str]:
    """The node's open sessions by transport kind."""
    return Counter(session.transport.kind for session in node.sessions.values())


def registry(node: Node) -> CollectorRegistry:
    """A registry of the node's metrics and of its process (several nodes in one process,
    as in tests, each have their own)."""
    result = CollectorRegistry()
    result.register(NodeCollector(node))
    ProcessCollector(registry=result)
    PlatformCollector(registry=result)
    GCCollector(registry=result)
    return result


def _fill(
    metric: CounterMetricFamily | GaugeMetricFamily, counts: Counter[str], known: Iterable[str]
) -> Metric:
    """``metric`` with a sample for every known label value (0 if none), then any other."""
    values = dict.fromkeys(known, 0)
    values.update(counts)
    for value, count in values.items():
        metric.add_metric([value], count)
    return metric

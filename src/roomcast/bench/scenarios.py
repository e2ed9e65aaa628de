"""The scenarios: fan-out to N subscribers of one room (fixed rate or full speed), and N
idle connections. Each runs against one started target with the worker pool.

Subscribers read over the target's transport (WebSocket, or SSE: ``GET /sse?rooms=``);
the publisher always uses WebSocket. A target may be several processes (a cluster:
nodes and redis-server); the server CPU, RSS and run-queue wait of a fan-out are then
their sums, and each one's CPU is reported too (``process_cpu_percent``).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from roomcast.bench.accounting import Tally, merged_percentiles
from roomcast.bench.pool import BenchError, WorkerPool, shares
from roomcast.bench.procstat import (
    cpu_pressure_seconds,
    cpu_seconds,
    cpu_times,
    rss_bytes,
    run_queue_seconds,
)
from roomcast.bench.publisher import Publisher
from roomcast.bench.sseclient import sse_url
from roomcast.bench.targets import Target, transport_of
from roomcast.bench.worker import url_with_name

Report = Callable[[str, float, float], None]  # (what is going on, done, total)
MIB = 1024 * 1024
QUIET_LIMIT = 90.0  # seconds to wait for the join floods to end (1000 x 1000 joined events)
DRAIN_LIMIT = 300.0  # seconds the drain may go on while the subscribers still progress


@dataclass(frozen=True)
class FanoutConfig:
    subscribers: int = 1000
    mode: str = "rate"  # "rate": ``rate`` messages a second; "full": as fast as it goes
    rate: float = 20.0
    duration: float = 10.0
    warmup: float = 2.0
    window: int = 64  # full speed: publishes in flight (unacknowledged)
    max_lag: int = 50  # full speed: messages ahead of the slowest subscriber
    read_interval: float = 0.0  # subscribers read every this many seconds (0: at once)
    drain_timeout: float = 20.0  # seconds without progress before giving up


@dataclass
class FanoutResult:
    target: str
    mode: str
    subscribers: int
    seconds: float
    published: int
    publish_errors: int
    deliveries_per_s: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    lost: int
    duplicated: int
    out_of_order: int
    foreign: int
    drained: bool
    server_cpu_us_per_delivery: float | None
    server_user_us_per_delivery: float | None  # in the server's own code (and libraries)
    server_system_us_per_delivery: float | None  # in the kernel, for the server (sends)
    server_cpu_percent: float | None
    server_rss_mib: float | None
    server_wait_percent: float | None  # runnable, waiting for a CPU (a busy machine)
    loadgen_cpu_percent: float
    cpu_pressure_percent: float  # of the time, some task of the machine waited for a CPU
    notes: list[str] = field(default_factory=list)
    nodes: int = 1  # roomcast nodes serving the room
    placement: str = ""  # cluster: "remote" (no subscriber on the publisher's node), "spread"
    process_cpu_percent: dict[str, float] = field(default_factory=dict)  # each server process
    transport: str = "websocket"  # how the subscribers read: "websocket" or "sse"


@dataclass
class IdleResult:
    target: str
    connections: int
    failed: int
    connect_seconds: float
    rss_before_mib: float | None
    rss_after_mib: float | None
    kib_per_connection: float | None


@dataclass(frozen=True)
class Snapshot:
    wall: float
    delivered: int
    server_cpu: dict[str, tuple[float, float]]  # per server process: user, system
    server_wait: float | None
    loadgen_cpu: float
    pressure: float

    @classmethod
    def take(cls, pool: WorkerPool, processes: dict[str, int]) -> Snapshot:
        server = {name: cpu_times(pid) for name, pid in processes.items()}
        pids = processes.values()
        wait = sum(run_queue_seconds(pid) for pid in pids) if processes else None
        loadgen = pool.cpu_seconds() + time.process_time()
        return cls(
            time.monotonic(), pool.total_delivered(), server, wait, loadgen, cpu_pressure_seconds()
        )


async def quiesce(pids: Collection[int], limit: float = QUIET_LIMIT) -> bool:
    """Wait until the server processes together use under 5% of a core (join floods are
    over); False if they were still busy after ``limit`` seconds."""
    if not pids:
        await asyncio.sleep(1.0)
        return True
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        before = sum(cpu_seconds(pid) for pid in pids)
        await asyncio.sleep(0.25)
        if sum(cpu_seconds(pid) for pid in pids) - before < 0.0125:
            return True
    return False


async def run_fanout(
    target: Target, pool: WorkerPool, config: FanoutConfig, report: Report
) -> FanoutResult:
    room = f"bench-{secrets.token_hex(4)}"
    counts = shares(config.subscribers, pool.size)
    active = [index for index, count in enumerate(counts) if count]
    url = target.ws_url
    pool.reset_progress(0)
    report("connecting subscribers", 0, 1)
    await pool.spread(counts, "subscribe", subscriber_urls(target, room), room)
    publisher = Publisher(url_with_name(url, "publisher"), room)
    await publisher.connect()
    try:
        await pool.all("pace", config.read_interval)
        report("settling", 0, 1)
        quiet = await quiesce(target.processes.values())
        start, end = await _publish(target, pool, publisher, config, active, report)
        drained = await _drain(pool, publisher, active, config.drain_timeout, report)
        span = ("collect", publisher.first_offset, publisher.last_offset)
        replies = await pool.each([span if count else None for count in counts])
    finally:
        publisher.close()
        await pool.all("close")
    result = _fanout_result(target, config, publisher, start, end, replies, drained)
    if not quiet:
        result.notes.append(f"the server was still busy {QUIET_LIMIT:g} s after the joins")
    return result


def subscriber_urls(target: Target, room: str) -> list[str]:
    """Where the subscribers connect: the target's WebSocket URLs, or the SSE stream of
    ``room`` on the same servers."""
    if transport_of(target) == "sse":
        return [sse_url(url, room) for url in target.subscriber_urls]
    return target.subscriber_urls


async def _publish(
    target: Target,
    pool: WorkerPool,
    publisher: Publisher,
    config: FanoutConfig,
    active: list[int],
    report: Report,
) -> tuple[Snapshot, Snapshot]:
    """Publish for warmup + duration; the snapshots frame the measured part."""
    loop = asyncio.get_running_loop()
    total = config.warmup + config.duration
    if config.mode == "rate":
        job = publisher.run_rate(config.rate, total)
    else:

        def progress() -> int:
            return max(pool.min_progress(active), publisher.base)

        job = publisher.run_full(total, config.window, config.max_lag, progress)
    task = loop.create_task(job)
    began = loop.time()
    await _watch(task, began + config.warmup, f"warming up ({config.mode})", total, report)
    start = Snapshot.take(pool, target.processes)
    await pool.all("record", True)
    await _watch(task, began + total, f"publishing ({config.mode})", total, report)
    end = Snapshot.take(pool, target.processes)
    await task
    return start, end


async def _watch(
    task: asyncio.Task[None], until: float, what: str, total: float, report: Report
) -> None:
    loop = asyncio.get_running_loop()
    began = until - total
    while loop.time() < until:
        if task.done():
            task.result()  # raises what the publisher raised
            break
        report(what, min(total, loop.time() - began), total)
        await asyncio.sleep(min(0.2, max(0.0, until - loop.time())))


async def _drain(
    pool: WorkerPool, publisher: Publisher, active: list[int], timeout: float, report: Report
) -> bool:
    """Wait for the acks, then for every subscriber to have the last offset: as long as
    the slowest one makes progress (up to DRAIN_LIMIT), else ``timeout`` seconds."""
    report("waiting for the last deliveries", 0, 1)
    await publisher.wait_acks(timeout)
    loop = asyncio.get_running_loop()
    limit = loop.time() + DRAIN_LIMIT
    deadline = loop.time() + timeout
    seen = pool.min_progress(active)
    while loop.time() < min(deadline, limit):
        progress = pool.min_progress(active)
        if progress >= publisher.last_offset:
            return True
        if progress > seen:
            seen, deadline = progress, loop.time() + timeout
        await asyncio.sleep(0.02)
    return False


def _fanout_result(
    target: Target,
    config: FanoutConfig,
    publisher: Publisher,
    start: Snapshot,
    end: Snapshot,
    replies: list[tuple[object, ...]],
    drained: bool,
) -> FanoutResult:
    tally = Tally()
    sketches: list[tuple[int, list[int]]] = []
    for _, worker_tally, worker_sketch, _ in replies:
        assert isinstance(worker_tally, Tally) and isinstance(worker_sketch, tuple)
        tally.add(worker_tally)
        sketches.append(worker_sketch)
    p50, p99, top = merged_percentiles(sketches, [0.50, 0.99, 1.0])
    seconds = end.wall - start.wall
    delivered = end.delivered - start.delivered
    user, system = _cpu_split(start, end)
    cpu = None if user is None or system is None else user + system
    pids = list(target.processes.values())
    return FanoutResult(
        target=target.name,
        mode=config.mode,
        subscribers=config.subscribers,
        seconds=round(seconds, 3),
        published=publisher.sent,
        publish_errors=len(publisher.errors),
        deliveries_per_s=delivered / seconds,
        latency_p50_ms=_ms(p50),
        latency_p99_ms=_ms(p99),
        latency_max_ms=_ms(top),
        lost=tally.lost,
        duplicated=tally.duplicated,
        out_of_order=tally.out_of_order,
        foreign=tally.foreign,
        drained=drained,
        server_cpu_us_per_delivery=_per_delivery(cpu, delivered),
        server_user_us_per_delivery=_per_delivery(user, delivered),
        server_system_us_per_delivery=_per_delivery(system, delivered),
        server_cpu_percent=_percent(cpu, seconds),
        server_rss_mib=sum(rss_bytes(pid) for pid in pids) / MIB if pids else None,
        server_wait_percent=_percent(_difference(start.server_wait, end.server_wait), seconds),
        loadgen_cpu_percent=(end.loadgen_cpu - start.loadgen_cpu) / seconds * 100,
        cpu_pressure_percent=(end.pressure - start.pressure) / seconds * 100,
        notes=publisher.errors[:3],
        nodes=int(getattr(target, "nodes", 1)),
        placement=str(getattr(target, "placement", "")),
        transport=transport_of(target),
        process_cpu_percent={
            name: (sum(end.server_cpu[name]) - sum(before)) / seconds * 100
            for name, before in start.server_cpu.items()
            if name in end.server_cpu
        },
    )


def _difference(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def _cpu_split(start: Snapshot, end: Snapshot) -> tuple[float | None, float | None]:
    """User and system CPU seconds of all the server processes between the snapshots."""
    names = [name for name in start.server_cpu if name in end.server_cpu]
    if not names:
        return None, None
    user = sum(end.server_cpu[name][0] - start.server_cpu[name][0] for name in names)
    system = sum(end.server_cpu[name][1] - start.server_cpu[name][1] for name in names)
    return user, system


def _per_delivery(seconds: float | None, delivered: int) -> float | None:
    return None if seconds is None or not delivered else seconds / delivered * 1e6


def _percent(part: float | None, whole: float) -> float | None:
    return None if part is None else part / whole * 100


def _ms(nanoseconds: float | None) -> float | None:
    return None if nanoseconds is None else nanoseconds / 1e6


async def run_idle(target: Target, pool: WorkerPool, count: int, report: Report) -> IdleResult:
    """Open ``count`` idle connections; server RSS after minus before, per connection."""
    url, pid = target.ws_url, target.pid
    report("warming up (1 connection)", 0, count)
    await pool.call(0, "idle", url, 1, "warm-")
    await pool.call(0, "close")
    await quiesce([pid] if pid is not None else [])
    before = rss_bytes(pid) if pid is not None else None
    began = time.monotonic()
    opened, failed = 0, 0
    batches = max(1, min(20, count // 500))
    try:
        for batch in range(batches):
            counts = shares(shares(count, batches)[batch], pool.size)
            replies = await pool.spread(counts, "idle", url)
            failed += sum(int(str(reply[3])) for reply in replies)
            opened = sum(shares(count, batches)[: batch + 1]) - failed
            report(f"opening idle connections ({opened} open)", opened, count)
        connect_seconds = time.monotonic() - began
        await quiesce([pid] if pid is not None else [])
        after = rss_bytes(pid) if pid is not None else None
    finally:
        await pool.all("close")
    if failed and failed == count:
        raise BenchError(f"no idle connection could be opened to {url}")
    per_connection = None if before is None or after is None else (after - before) / opened
    return IdleResult(
        target=target.name,
        connections=opened,
        failed=failed,
        connect_seconds=round(connect_seconds, 2),
        rss_before_mib=None if before is None else before / MIB,
        rss_after_mib=None if after is None else after / MIB,
        kib_per_connection=None if per_connection is None else per_connection / 1024,
    )

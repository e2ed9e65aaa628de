"""A load generator process: holds its share of the connections, reports through a pipe.

The parent sends commands (tuples) through a :class:`~multiprocessing.connection.Connection`
and gets one reply per command. While subscribers are connected, the worker writes its
progress every few milliseconds into shared memory, without a round trip:
``delivered[i]`` (message events received) and ``progress[i]`` (the lowest newest offset
any of its subscribers has seen, which the full-speed publisher uses as flow control).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine, MutableSequence
from multiprocessing.connection import Connection
from typing import Any

from roomcast.bench.accounting import Tally, sketch, tally
from roomcast.bench.procstat import raise_nofile
from roomcast.bench.sseclient import SseSubscriber
from roomcast.bench.wsclient import (
    ClientProtocol,
    Recorder,
    Subscriber,
    WsProtocol,
    open_connection,
)

TICK = 0.005
CONNECT_CONCURRENCY = 64

Reply = tuple[Any, ...]
AnySubscriber = Subscriber | SseSubscriber


class Worker:
    def __init__(
        self,
        conn: Connection,
        index: int,
        delivered: MutableSequence[int],
        progress: MutableSequence[int],
    ) -> None:
        self.conn = conn
        self.index = index
        self.delivered = delivered
        self.progress = progress
        self.recorder = Recorder()
        self.subscribers: list[AnySubscriber] = []
        self.idle: list[WsProtocol] = []
        self._ticker: asyncio.Task[None] | None = None
        self._pacer: asyncio.Task[None] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # In a thread: uvloop's add_reader would make the pipe non-blocking under recv().
            try:
                command = await loop.run_in_executor(None, self.conn.recv)
            except EOFError:  # the parent is gone
                return
            if command[0] == "exit":
                return
            self._on_command(command)

    def _on_command(self, command: tuple[Any, ...]) -> None:
        handlers: dict[str, Callable[..., Coroutine[Any, Any, Reply]]] = {
            "subscribe": self.subscribe,
            "record": self.record,
            "pace": self.pace,
            "collect": self.collect,
            "idle": self.open_idle,
            "close": self.close,
        }
        task = asyncio.get_running_loop().create_task(handlers[command[0]](*command[1:]))
        task.add_done_callback(self._answer)

    def _answer(self, task: asyncio.Task[Reply]) -> None:
        error = task.exception()
        reply: Reply = ("error", repr(error)) if error is not None else task.result()
        self.conn.send(reply)

    async def subscribe(self, urls: list[str], room: str, count: int, prefix: str) -> Reply:
        """Connect ``count`` subscribers, each joined to ``room``, to ``urls`` round robin:
        WebSockets (ws://) that join it, or SSE streams (http://…/sse?rooms=...) of it."""
        limit = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one(number: int) -> None:
            named = url_with_name(urls[number % len(urls)], f"{prefix}{number}")
            subscriber = _subscriber(named, self.recorder)
            async with limit:
                await open_connection(named, subscriber)
                self.subscribers.append(subscriber)
                if isinstance(subscriber, Subscriber):
                    subscriber.join(room)
                async with asyncio.timeout(30):
                    await subscriber.joined

        await asyncio.gather(*(one(number) for number in range(count)))
        self._ticker = asyncio.get_running_loop().create_task(self._tick())
        return ("subscribed", len(self.subscribers))

    async def _tick(self) -> None:
        index, subscribers = self.index, self.subscribers
        while True:
            self.delivered[index] = self.recorder.delivered
            if subscribers:
                self.progress[index] = min(map(_next, subscribers)) - 1
            await asyncio.sleep(TICK)

    async def pace(self, interval: float) -> Reply:
        """Read the sockets in one pass every ``interval`` seconds (0: whenever ready)."""
        if self._pacer is not None:
            self._pacer.cancel()
            self._pacer = None
        if interval > 0:
            self._pacer = asyncio.get_running_loop().create_task(self._pace(interval))
        return ("paced", interval)

    async def _pace(self, interval: float) -> None:
        # Blocking on purpose: frames pile up in the sockets meanwhile, and the next loop
        # pass reads each socket once for many frames. Latency grows by up to ``interval``.
        while True:
            time.sleep(interval)  # noqa: ASYNC251
            await asyncio.sleep(0)

    async def record(self, on: bool) -> Reply:
        """Start (clearing what was recorded) or stop recording latencies."""
        if on:
            del self.recorder.latencies[:]
        self.recorder.recording = on
        return ("recording", on)

    async def collect(self, first: int, last: int) -> Reply:
        """Tally every subscriber against offsets ``first..last``; sketch the latencies."""
        total = Tally()
        for subscriber in self.subscribers:
            total.add(tally(subscriber.all_runs(), first, last))
        count, points = sketch(self.recorder.latencies)
        return ("collected", total, (count, points), len(self.subscribers))

    async def open_idle(self, url: str, count: int, prefix: str) -> Reply:
        """Open ``count`` connections that only say hello; returns how many failed."""
        limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
        failures: list[str] = []

        async def one(number: int) -> None:
            named = url_with_name(url, f"{prefix}{number}")
            connection = WsProtocol(named)
            async with limit:
                try:
                    await open_connection(named, connection)
                except (OSError, TimeoutError) as exc:
                    failures.append(repr(exc))
                    return
            self.idle.append(connection)

        await asyncio.gather(*(one(number) for number in range(count)))
        return ("idled", len(self.idle), failures[:5], len(failures))

    async def close(self) -> Reply:
        await self.pace(0)
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None
        connections: list[ClientProtocol] = [*self.subscribers, *self.idle]
        for connection in connections:
            connection.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await asyncio.gather(*(c.lost for c in connections), return_exceptions=True)
        self.subscribers.clear()
        self.idle.clear()
        self.recorder = Recorder()
        return ("closed", len(connections))


def _subscriber(url: str, recorder: Recorder) -> AnySubscriber:
    if url.startswith(("http://", "https://")):
        return SseSubscriber(url, recorder)
    return Subscriber(url, recorder)


def _next(subscriber: AnySubscriber) -> int:
    return subscriber.next


def url_with_name(url: str, name: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}name={name}"


def worker_main(
    conn: Connection, index: int, delivered: MutableSequence[int], progress: MutableSequence[int]
) -> None:
    """The entry point of a worker process."""
    raise_nofile()
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency where it builds
        asyncio.run(Worker(conn, index, delivered, progress).run())
    else:
        uvloop.run(Worker(conn, index, delivered, progress).run())

"""What a session needs from its transport, and a fake one for tests."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import msgspec

from roomcast.frame import Frame

if TYPE_CHECKING:
    from roomcast.session import Session

Sinks = dict["Session", Any]


class Transport(Protocol):
    """The outbound half of a client connection, as a session and the hub see it.

    Fan-out goes through the transport's class: the hub keeps, per room and transport
    class, each member's ``sink`` and calls ``broadcast`` once per message, so that a
    transport can write one frame to all of its members in one tight loop.
    """

    kind: ClassVar[str]
    # True if the client answers ``ping`` (WebSocket): a node drops a session that missed
    # one. SSE and long polling learn that a client is gone from the connection itself.
    pongs: ClassVar[bool]

    @property
    def sink(self) -> Any:
        """What ``broadcast`` writes to for this connection."""
        ...

    @staticmethod
    def broadcast(frame: Frame, sinks: Sinks, max_buffer: int) -> list[Session]:
        """Send ``frame`` to every sink; return the sessions whose buffer overflowed."""
        ...

    def send(self, frame: Frame) -> bool:
        """Queue ``frame`` without blocking; False once the outbound buffer is over its bound."""
        ...

    def ping(self) -> None:
        """Send a transport-level keep-alive probe, if the transport has one."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Start closing the connection with ``code``; returns at once."""
        ...


class FakeTransport:
    """Records what a session sends; for tests of the layers above transports.

    ``max_frames`` makes it report a full buffer after that many frames, as a client
    that stopped reading would.
    """

    kind: ClassVar[str] = "fake"
    pongs: ClassVar[bool] = True

    def __init__(self, max_frames: int | None = None) -> None:
        self.sent: list[bytes] = []
        self.writes = 0  # calls to send: a multi-event frame is one write
        self.pings = 0
        self.closed: tuple[int, str] | None = None
        self.max_frames = max_frames
        self._read = 0
        self._arrived = asyncio.Event()
        self._pinged = asyncio.Event()

    @property
    def sink(self) -> FakeTransport:
        return self

    @staticmethod
    def broadcast(frame: Frame, sinks: Sinks, max_buffer: int) -> list[Session]:
        return [session for session, fake in sinks.items() if not fake.send(frame)]

    def send(self, frame: Frame) -> bool:
        self.writes += 1
        self.sent.extend(frame.payloads)
        self._arrived.set()
        return self.max_frames is None or len(self.sent) <= self.max_frames

    def ping(self) -> None:
        self.pings += 1
        self._pinged.set()

    async def next_ping(self, timeout: float = 5.0) -> None:
        """Wait for the next ping."""
        self._pinged.clear()
        await asyncio.wait_for(self._pinged.wait(), timeout)

    def close(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = (code, reason)

    async def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame not received yet, decoded; waits for it up to ``timeout``."""
        while self._read >= len(self.sent):
            self._arrived.clear()
            await asyncio.wait_for(self._arrived.wait(), timeout)
        payload = self.sent[self._read]
        self._read += 1
        value: dict[str, Any] = msgspec.json.decode(payload)
        return value

    async def until(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame of ``type`` ``kind``, skipping others."""
        while True:
            frame = await self.receive(timeout)
            if frame["type"] == kind:
                return frame

    def events(self) -> list[dict[str, Any]]:
        """Every frame sent so far, decoded."""
        return [msgspec.json.decode(payload) for payload in self.sent]

    def take(self) -> list[dict[str, Any]]:
        """The frames sent since the last call, decoded."""
        events = self.events()[self._read :]
        self._read = len(self.sent)
        return events

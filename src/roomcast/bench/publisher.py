"""The publisher: one connection joined to the bench room, at a fixed rate or full speed.

Every message's data is ``{"t": <time.time_ns() when sent>, "seq": n}``; subscribers
measure latency from ``t``. Publishes carry ids; the acks give the offsets assigned.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import msgspec

from roomcast.bench.wsclient import FrameClient, open_connection

_MESSAGE_PREFIX = b'{"type":"message"'
LAG_POLL = 0.002  # seconds; the workers publish their progress every 5 ms


class Reply(msgspec.Struct):
    type: str
    id: int | str | None = None
    offset: int | None = None
    code: str | None = None
    message: str | None = None


_decode_reply = msgspec.json.Decoder(Reply).decode


class Publisher:
    def __init__(self, url: str, room: str) -> None:
        self.url = url
        self.room = room
        self.client = FrameClient(url, self._on_frame)
        self.base = 0  # the room's newest offset when the publisher joined
        self.sent = 0
        self.acked = 0
        self.first_offset = 0
        self.last_offset = 0
        self.errors: list[str] = []
        self._template = b'{"type":"publish","room":"%s","data":{"t":%%d,"seq":%%d},"id":%%d}' % (
            room.encode()
        )
        self._joined: asyncio.Future[int] | None = None
        self._acked = asyncio.Event()

    async def connect(self) -> None:
        await open_connection(self.url, self.client)
        self._joined = asyncio.get_running_loop().create_future()
        self.client.send_text(b'{"type":"join","room":"%s","id":"join"}' % self.room.encode())
        async with asyncio.timeout(30):
            self.base = await self._joined

    def close(self) -> None:
        self.client.close()

    @property
    def in_flight(self) -> int:
        return self.sent - self.acked - len(self.errors)

    def publish(self) -> None:
        number = self.sent
        self.client.send_text(self._template % (time.time_ns(), number, number))
        self.sent += 1

    def _on_frame(self, opcode: int, payload: bytes) -> None:
        if opcode != 0x1 or payload.startswith(_MESSAGE_PREFIX):
            return  # its own messages come back to it too: subscribers count those
        reply = _decode_reply(payload)
        if reply.type == "error":
            self.errors.append(f"{reply.code}: {reply.message}")
            self._acked.set()
        elif reply.type == "ok" and reply.id == "join" and self._joined is not None:
            if not self._joined.done():
                self._joined.set_result(reply.offset or 0)
        elif reply.type == "ok" and reply.offset is not None:
            self._ack(reply.offset)

    def _ack(self, offset: int) -> None:
        self.acked += 1
        if not self.first_offset or offset < self.first_offset:
            self.first_offset = offset
        self.last_offset = max(self.last_offset, offset)
        self._acked.set()

    async def run_rate(self, rate: float, seconds: float) -> None:
        """Publish ``rate`` messages a second, evenly spaced, for ``seconds``."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        total = max(1, round(rate * seconds))
        while self.sent < total:
            due = min(total, int((loop.time() - start) * rate) + 1)
            while self.sent < due:
                self.publish()
            await asyncio.sleep(max(0.0, start + self.sent / rate - loop.time()))

    async def run_full(
        self, seconds: float, window: int, max_lag: int, progress: Callable[[], int]
    ) -> None:
        """Publish as fast as the acks allow (at most ``window`` unacknowledged), and no
        more than ``max_lag`` messages ahead of the slowest subscriber (``progress()``
        is the lowest newest offset the subscribers have)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while loop.time() < end:
            if self.in_flight >= window:
                self._acked.clear()
                await self._wait_ack(0.05)
            elif self.base + self.sent - progress() >= max_lag:
                await asyncio.sleep(LAG_POLL)
            else:
                self.publish()
                if self.sent % 8 == 0:
                    await asyncio.sleep(0)

    async def _wait_ack(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._acked.wait()
        except TimeoutError:
            pass

    async def wait_acks(self, timeout: float) -> None:
        """Wait until every publish is answered (or ``timeout`` passes)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.in_flight > 0 and loop.time() < deadline:
            self._acked.clear()
            await self._wait_ack(0.05)

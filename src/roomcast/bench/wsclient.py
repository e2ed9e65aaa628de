"""A lean WebSocket client on a raw asyncio Protocol, for the load generator.

Only what the benchmark needs of RFC 6455: the opening handshake, masked client text
frames, a frame parser (for the publisher), and a subscriber that reads the stream
without a per-frame parse: it finds every ``message`` event by a regular expression over
the received bytes (``"offset":N,"data":{"t":T,"seq":``, the order both servers write)
and checks that the offsets of the connection arrive one by one. A frame it cannot see
that way counts as lost, never as delivered, so this shortcut can only hide nothing.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import struct
from array import array
from collections.abc import Callable
from time import time_ns
from typing import Final, cast
from urllib.parse import urlsplit

_GUID: Final = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_ZERO_MASK: Final = b"\x00\x00\x00\x00"  # a legal mask key that leaves the payload as is
PONG: Final = b"\x8a\x80" + _ZERO_MASK  # empty pong from a client
CLOSE: Final = b"\x88\x82" + _ZERO_MASK + b"\x03\xe8"  # close 1000
_MESSAGE: Final = re.compile(rb'"offset":(\d+),"data":\{"t":(\d+),"seq":')
_SEQ_TAIL: Final = b',"seq":'
_OK: Final = b'"type":"ok"'
_ERROR: Final = b'"type":"error"'
_CARRY: Final = 1024  # longer than any message event up to its "seq" field
_PING_OPCODE: Final = 0x89  # never a byte of JSON text, so its presence means a ping


def text_frame(payload: bytes) -> bytes:
    """A masked client text frame (mask key zero: the payload is sent as is)."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, 0x80 | size))
    elif size < 65536:
        header = struct.pack("!BBH", 0x81, 0xFE, size)
    else:
        header = struct.pack("!BBQ", 0x81, 0xFF, size)
    return header + _ZERO_MASK + payload


class FrameParser:
    """Splits a server byte stream into (opcode, payload) frames; server frames are unmasked."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buffer = self._buffer + data if self._buffer else data
        frames: list[tuple[int, bytes]] = []
        position, end = 0, len(buffer)
        while end - position >= 2:
            size = buffer[position + 1] & 0x7F
            start = position + 2
            if size == 126:
                if end - start < 2:
                    break
                size = int.from_bytes(buffer[start : start + 2], "big")
                start += 2
            elif size == 127:
                if end - start < 8:
                    break
                size = int.from_bytes(buffer[start : start + 8], "big")
                start += 8
            if end - start < size:
                break
            frames.append((buffer[position] & 0x0F, buffer[start : start + size]))
            position = start + size
        self._buffer = buffer[position:]
        return frames


class ClientProtocol(asyncio.Protocol):
    """A client connection with an opening exchange: ``opened`` resolves once it is done
    (a WebSocket handshake, an SSE response's head), ``lost`` once the connection is gone."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._host = parts.netloc
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()

    def _fail(self, error: Exception) -> None:
        for future in (self.opened, self.lost):
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: whoever awaits it re-raises
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
            self.opened.exception()
        if not self.lost.done():
            self.lost.set_result(None)


class WsProtocol(ClientProtocol):
    """The opening handshake; subclasses get the frames' bytes in :meth:`stream`."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._key = base64.b64encode(os.urandom(16))
        self._head = b""
        self._upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        request = (
            f"GET {self._target} HTTP/1.1\r\nHost: {self._host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {self._key.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        self.transport.write(request.encode())

    def data_received(self, data: bytes) -> None:
        if self._upgraded:
            self.stream(data)
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            return
        head, rest = self._head[:end], self._head[end + 4 :]
        self._head = b""
        error = self._check_handshake(head)
        if error is not None:
            self._fail(ConnectionError(error))
            return
        self._upgraded = True
        if not self.opened.done():
            self.opened.set_result(None)
        if rest:
            self.stream(rest)

    def _check_handshake(self, head: bytes) -> str | None:
        lines = head.split(b"\r\n")
        if len(lines[0].split()) < 2 or lines[0].split()[1] != b"101":
            return f"handshake refused: {lines[0].decode(errors='replace')}"
        accept = base64.b64encode(hashlib.sha1(self._key + _GUID).digest())
        headers = dict(line.split(b":", 1) for line in lines[1:] if b":" in line)
        values = {name.strip().lower(): value.strip() for name, value in headers.items()}
        if values.get(b"sec-websocket-accept") != accept:
            return "handshake: wrong Sec-WebSocket-Accept"
        return None

    def stream(self, data: bytes) -> None:
        """Bytes of the frame stream after the handshake; this base answers pings only."""
        if _PING_OPCODE in data and self.transport is not None:
            self.transport.write(PONG)

    def send_text(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(text_frame(payload))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(CLOSE)
        super().close()


class Recorder:
    """What the subscribers of one process share: delivery count and latencies (ns)."""

    __slots__ = ("delivered", "latencies", "recording")

    def __init__(self) -> None:
        self.delivered = 0
        self.recording = False
        self.latencies: array[int] = array("q")


class OffsetRuns:
    """The offsets a subscriber received, as runs of consecutive numbers: one run while
    the server behaves. ``runs`` keeps the finished runs (first, last) when one breaks
    (a gap, a repeat). Subclasses set ``recorder`` and ``runs`` in ``__init__``."""

    recorder: Recorder
    runs: list[tuple[int, int]]
    run_first = 0  # first offset of the current run (0: none yet)
    next = 0  # the offset expected next

    def _account(self, found: list[tuple[bytes, bytes]], now: int) -> None:
        """``found``: (offset, sent time in ns) of each message event, in arrival order."""
        recorder = self.recorder
        recorder.delivered += len(found)
        expected = self.next
        keep = recorder.latencies.append if recorder.recording else None
        for offset_text, sent in found:
            offset = int(offset_text)
            if offset != expected:
                self._break_run(offset, expected)
            expected = offset + 1
            if keep is not None:
                keep(now - int(sent))
        self.next = expected

    def _break_run(self, offset: int, expected: int) -> None:
        if self.run_first:
            self.runs.append((self.run_first, expected - 1))
        self.run_first = offset

    def all_runs(self) -> list[tuple[int, int]]:
        if not self.run_first:
            return list(self.runs)
        return [*self.runs, (self.run_first, self.next - 1)]


class Subscriber(OffsetRuns, WsProtocol):
    """A member of the bench room that accounts for every offset it receives."""

    def __init__(self, url: str, recorder: Recorder) -> None:
        super().__init__(url)
        self.recorder = recorder
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.runs = []
        self._carry = b""

    def join(self, room: str) -> None:
        self.send_text(b'{"type":"join","room":"%s","id":1}' % room.encode())

    def stream(self, data: bytes) -> None:
        if _PING_OPCODE in data:
            super().stream(data)
        buffer = self._carry + data if self._carry else data
        found = _MESSAGE.findall(buffer)
        if not found:
            if not self.joined.done():
                self._check_joined(buffer)
            self._carry = buffer[-_CARRY:]
            return
        self._carry = buffer[buffer.rfind(_SEQ_TAIL) + len(_SEQ_TAIL) :][-_CARRY:]
        self._account(found, time_ns())

    def _check_joined(self, buffer: bytes) -> None:
        if _OK in buffer:
            self.joined.set_result(None)
        elif _ERROR in buffer:
            error = ConnectionError(f"join refused: {buffer[-200:]!r}")
            self.joined.set_exception(error)
            self.joined.exception()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.joined.done():
            self.joined.set_exception(exc or ConnectionError("closed before joining"))
            self.joined.exception()


class FrameClient(WsProtocol):
    """A connection that hands every whole frame to ``on_frame`` (the publisher's)."""

    def __init__(self, url: str, on_frame: Callable[[int, bytes], None]) -> None:
        super().__init__(url)
        self._parser = FrameParser()
        self._on_frame = on_frame

    def stream(self, data: bytes) -> None:
        for opcode, payload in self._parser.feed(data):
            if opcode == 0x9:
                self.send_pong(payload)
            else:
                self._on_frame(opcode, payload)

    def send_pong(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(bytes((0x8A, 0x80 | len(payload))) + _ZERO_MASK + payload)


async def open_connection(url: str, protocol: ClientProtocol, timeout: float = 30.0) -> None:
    """Connect ``protocol`` to ``url`` (ws:// or http://host:port/path) and finish its
    opening exchange."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        await loop.create_connection(lambda: protocol, host, port)
        await protocol.opened

"""A lean Server-Sent Events client on a raw asyncio Protocol, for the load generator.

Like :mod:`roomcast.bench.wsclient` for WebSocket: one ``GET /sse?rooms=R`` over
HTTP/1.1, the response's head checked (200, ``text/event-stream``), the chunked body
taken apart chunk by chunk (a few slices per chunk, nothing per event), and the
``message`` events found by one regular expression over the event stream. An event is
seen only whole: ``event: message``, a ``data:`` line holding roomcast's message JSON
(``{"type":"message","room":..,"epoch":..,"offset":N,"data":{"t":T,"seq":``, its fields
in roomcast's order) and an ``id:`` line (the cursor) that ends with the same offset N.
An event the expression does not see counts as lost, never as delivered, so the
shortcut can hide nothing.
"""

from __future__ import annotations

import asyncio
import re
from time import time_ns
from typing import Final, cast
from urllib.parse import quote, urlsplit, urlunsplit

from roomcast.bench.wsclient import ClientProtocol, OffsetRuns, Recorder

_EVENT: Final = re.compile(
    rb'event: message\ndata: \{"type":"message","room":"[^"]*","epoch":"[^"]*",'
    rb'"offset":(\d+),"data":\{"t":(\d+),"seq":[^\n]*\nid: [^\n]*~\1\n\n'
)  # roomcast's field order, as on WebSocket; naming the fields keeps the regex fast
_OK: Final = b"event: ok\n"
_END: Final = b"\n\n"  # every event and comment ends with an empty line
_CARRY: Final = 16384  # longer than any event; what a read leaves of an unfinished one
_HEAD_LIMIT: Final = 65536


def sse_url(ws_url: str, room: str) -> str:
    """The ``GET /sse`` stream of ``room`` on the server of ``ws_url`` (ws://host:port/ws)."""
    parts = urlsplit(ws_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return urlunsplit((scheme, parts.netloc, "/sse", f"rooms={quote(room)}", ""))


class Dechunker:
    """The body of a ``Transfer-Encoding: chunked`` response, from its bytes as they come.

    A chunk that arrived whole costs a find, an int and two slices; one cut by the end of
    a read is taken in parts. A wrong chunk size shows as a size line that is no number
    (ValueError)."""

    __slots__ = ("_head", "_left", "_skip", "ended")

    def __init__(self) -> None:
        self._head = b""  # an unfinished chunk-size line
        self._left = 0  # bytes of the current chunk's data still to come
        self._skip = 0  # bytes of the CRLF after the chunk's data still to come
        self.ended = False  # the last (empty) chunk came

    def feed(self, data: bytes) -> bytes:
        if self._head:
            data, self._head = self._head + data, b""
        parts: list[bytes] = []
        position = self._rest(data, parts, 0) if self._left or self._skip else 0
        end = len(data)
        while position < end and not self.ended:
            eol = data.find(b"\r\n", position)
            if eol < 0:
                self._keep_head(data[position:])
                break
            size = _chunk_size(data[position:eol])
            start = eol + 2
            stop = start + size
            if not size:
                self.ended = True
            elif stop + 2 <= end:  # the whole chunk is here
                parts.append(data[start:stop])
                position = stop + 2
            else:
                self._left, self._skip = size, 2
                position = self._rest(data, parts, start)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _rest(self, data: bytes, parts: list[bytes], position: int) -> int:
        """Take what ``data`` holds of the current chunk from ``position``: its data,
        then its CRLF; where that ends."""
        take = min(self._left, len(data) - position)
        if take:
            parts.append(data[position : position + take])
            position += take
            self._left -= take
        if not self._left:
            skip = min(self._skip, len(data) - position)
            position += skip
            self._skip -= skip
        return position

    def _keep_head(self, line: bytes) -> None:
        if len(line) > 1024:
            raise ValueError("chunked body: no chunk-size line")
        self._head = line


def _chunk_size(line: bytes) -> int:
    try:
        return int(line, 16)
    except ValueError:  # chunk extensions (";name=value") or not a chunk size at all
        return int(line.split(b";", 1)[0], 16)


class SseProtocol(ClientProtocol):
    """``GET`` an event stream; subclasses get the events' bytes in :meth:`events`."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._head = b""
        self._started = False
        self._dechunker: Dechunker | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        request = (
            f"GET {self._target} HTTP/1.1\r\nHost: {self._host}\r\n"
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
        )
        self.transport.write(request.encode())

    def data_received(self, data: bytes) -> None:
        if not self._started:
            data = self._read_head(data)
            if not data:
                return
        dechunker = self._dechunker
        try:
            body = dechunker.feed(data) if dechunker is not None else data
        except ValueError as exc:
            self._fail(ConnectionError(f"event stream: {exc}"))
            return
        if body:
            self.events(body)

    def _read_head(self, data: bytes) -> bytes:
        """Take the response's head from ``data``; what follows it (the body's bytes)."""
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > _HEAD_LIMIT:
                self._fail(ConnectionError("event stream: no end of the response head"))
            return b""
        head, rest = self._head[:end], self._head[end + 4 :]
        self._head = b""
        error = self._check_head(head)
        if error is not None:
            self._fail(ConnectionError(f"{error}: {rest[:300]!r}"))
            return b""
        self._started = True
        if not self.opened.done():
            self.opened.set_result(None)
        return rest

    def _check_head(self, head: bytes) -> str | None:
        lines = head.split(b"\r\n")
        status = lines[0].split()
        if len(status) < 2 or status[1] != b"200":
            return f"event stream refused: {lines[0].decode(errors='replace')}"
        headers = dict(line.split(b":", 1) for line in lines[1:] if b":" in line)
        values = {name.strip().lower(): value.strip().lower() for name, value in headers.items()}
        if not values.get(b"content-type", b"").startswith(b"text/event-stream"):
            return f"not an event stream: {values.get(b'content-type')!r}"
        if b"chunked" in values.get(b"transfer-encoding", b""):
            self._dechunker = Dechunker()
        return None

    def events(self, data: bytes) -> None:
        """Bytes of the event stream (de-chunked); this base ignores them."""


class SseSubscriber(OffsetRuns, SseProtocol):
    """A reader of the bench room's event stream that accounts for every offset; the
    room is in its URL (``?rooms=``), and ``joined`` resolves with the room's ``ok``."""

    def __init__(self, url: str, recorder: Recorder) -> None:
        super().__init__(url)
        self.recorder = recorder
        self.joined: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.runs = []
        self._carry = b""

    def events(self, data: bytes) -> None:
        buffer = self._carry + data if self._carry else data
        end = buffer.rfind(_END)
        if end < 0:  # no event ends here
            self._carry = buffer[-_CARRY:]
            return
        self._carry = buffer[end + 2 :][-_CARRY:]
        if not self.joined.done() and _OK in buffer:
            self.joined.set_result(None)
        found = _EVENT.findall(buffer, 0, end + 2)
        if found:
            self._account(found, time_ns())

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.joined.done():
            self.joined.set_exception(exc or ConnectionError("closed before the room's ok"))
            self.joined.exception()

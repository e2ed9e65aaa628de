"""Server-Sent Events: ``GET /sse?rooms=a,b`` streams every event of those rooms.

Each event is ``event: <type>``, ``data: <the JSON of the WebSocket frame>`` and
``id: <cursor>``: where the client stands in every room. A browser's EventSource sends
the last id back as ``Last-Event-ID`` when it reconnects (``?cursor=`` does the same),
and the stream replays what was missed in each room, then goes live. Commands go to
``POST /send`` with the session token of the ``welcome`` event.

Like WebSocket fan-out, events are written straight to the socket's transport (as
HTTP/1.1 chunks when the response is chunked); its write buffer is the bounded queue.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, ClassVar, Final

from aiohttp import web
from aiohttp.http import HttpVersion11

from roomcast.exceptions import CloseCode, ErrorCode, ProtocolError
from roomcast.frame import Frame
from roomcast.http.errors import error_response
from roomcast.protocol import Header
from roomcast.session import new_session_id
from roomcast.transports.base import Sinks
from roomcast.transports.oneway import (
    Cursor,
    claims_of,
    expired_response,
    join_rooms,
    positions_of,
)
from roomcast.transports.websocket import NODE_KEY

if TYPE_CHECKING:
    from roomcast.session import Session

PING: Final = b": ping\n\n"
HEADERS: Final = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: pass each event on at once
}


class SSETransport:
    kind: ClassVar[str] = "sse"
    pongs: ClassVar[bool] = False
    __slots__ = ("_chunked", "_limit", "_pending", "_transport", "cursor", "done")

    def __init__(self, cursor: Cursor, limit: int) -> None:
        self.cursor = cursor
        self._limit = limit
        self._transport: asyncio.Transport | None = None
        self._chunked = False
        self._pending: list[bytes] = []  # events sent before the headers are
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def attach(self, transport: asyncio.Transport, chunked: bool) -> None:
        """The response's headers are sent: write what waited, and from now on directly."""
        self._transport = transport
        self._chunked = chunked
        pending, self._pending = self._pending, []
        if pending:
            self._write(b"".join(pending))

    @property
    def sink(self) -> SSETransport:
        return self

    @property
    def buffered(self) -> int:
        """Bytes written and not yet sent (logged when the client is cut off as slow)."""
        return 0 if self._transport is None else self._transport.get_write_buffer_size()

    @staticmethod
    def broadcast(frame: Frame, sinks: Sinks, max_buffer: int) -> list[Session]:
        """Members whose cursors stand at the same place get the same bytes: each such
        group's events are rendered and chunk-framed once."""
        events = frame.sse
        slow: list[Session] = []
        rendered: dict[tuple[str, bool], tuple[bytes, Cursor]] = {}
        for session, link in sinks.items():
            transport = link._transport
            if transport is None or transport.is_closing():
                ok = link.send_events(events)
            else:
                key = (str(link.cursor), link._chunked)
                known = rendered.get(key)
                if known is None:
                    wire = link._wire(link._render(events))
                    rendered[key] = (wire, link.cursor)
                else:
                    wire = known[0]
                    link.cursor.copy_from(known[1])
                transport.write(wire)
                ok = transport.get_write_buffer_size() <= link._limit
            if not ok:
                slow.append(session)
        return slow

    def send(self, frame: Frame) -> bool:
        return self.send_events(frame.sse)

    def send_events(self, events: list[tuple[Header | None, bytes]]) -> bool:
        return self._write(self._render(events))

    def _render(self, events: list[tuple[Header | None, bytes]]) -> bytes:
        cursor = self.cursor
        parts: list[bytes] = []
        for header, start in events:
            if header is not None:
                cursor.moved(header)
            parts += (start, str(cursor).encode(), b"\n\n")
        return b"".join(parts)

    def _wire(self, body: bytes) -> bytes:
        return b"%x\r\n%b\r\n" % (len(body), body) if self._chunked else body

    def _write(self, body: bytes) -> bool:
        transport = self._transport
        if transport is None:
            self._pending.append(body)
            return True
        if transport.is_closing():
            self._finish()
            return True
        if self._chunked:
            transport.write(b"%x\r\n%b\r\n" % (len(body), body))
        else:
            transport.write(body)
        return transport.get_write_buffer_size() <= self._limit

    def ping(self) -> None:
        self._write(PING)

    def close(self, code: int, reason: str) -> None:
        if code == CloseCode.SLOW_CONSUMER and self._transport is not None:
            self._transport.abort()  # do not wait for a client that stopped reading
        self._finish()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def sse_handler(request: web.Request) -> web.StreamResponse:
    """``GET /sse?rooms=a,b[&name=N][&cursor=C]``: an event stream of those rooms."""
    node = request.app[NODE_KEY]
    try:
        if node.state != "ready":
            raise ProtocolError(ErrorCode.UNAVAILABLE, "the server is not accepting connections")
        claims = claims_of(request)
        positions = positions_of(request)
    except ProtocolError as error:
        return error_response(error)
    cursor = Cursor({room: positions[room] for room in claims.rooms if room in positions})
    link = SSETransport(cursor, node.settings.max_buffer)
    claims = claims.renamed(new_session_id())  # a stream is a session of its own
    session = node.open_session(
        link, claims.identity, session_id=claims.sid, token=node.signer.issue(claims)
    )
    try:
        expired = await join_rooms(node, session, claims.rooms, positions, cursor, reply=True)
        if expired:
            return expired_response(expired, cursor, positions)
        response = web.StreamResponse(headers=HEADERS)
        chunked = request.version >= HttpVersion11
        if chunked:
            response.enable_chunked_encoding()
        await response.prepare(request)
        transport = request.transport
        if transport is None:
            return response
        link.attach(transport, chunked)
        await link.done  # the client went away (this task is cancelled) or was closed
        return response
    except ProtocolError as error:
        return error_response(error)
    finally:
        node.close_session(session)

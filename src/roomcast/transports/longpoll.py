"""Long polling: ``GET /poll?session=T&cursor=C`` answers with every event newer than the
cursor, at once if there are some, else as soon as one comes or after the poll timeout.

The answer is ``{"type": "poll", "session": <token>, "node": ..., "cursor": <next>,
"events": [...]}``. The first poll, with ``?rooms=a,b`` instead of a session token,
answers at once with a ``welcome``. Between two polls the server keeps nothing: the
next poll may go to any node, which replays from the cursor through history, exactly
as a WebSocket ``join`` with ``since`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, ClassVar

from aiohttp import web

from roomcast.exceptions import ErrorCode, ProtocolError
from roomcast.frame import Frame
from roomcast.http.errors import error_response, json_body
from roomcast.node import number
from roomcast.protocol import Welcome, encode
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
    from roomcast.node import Node
    from roomcast.session import Session
    from roomcast.tokens import SessionClaims


class PollTransport:
    """Collects the events of one poll, up to ``limit`` bytes; after that it takes no
    more (the cursor stays at the last one taken, the next poll goes on from there)."""

    kind: ClassVar[str] = "poll"
    pongs: ClassVar[bool] = False
    __slots__ = ("arrived", "cursor", "events", "limit", "size")

    def __init__(self, cursor: Cursor, limit: int) -> None:
        self.cursor = cursor
        self.limit = limit
        self.events: list[bytes] = []
        self.size = 0
        self.arrived = asyncio.Event()

    @property
    def sink(self) -> PollTransport:
        return self

    @staticmethod
    def broadcast(frame: Frame, sinks: Sinks, max_buffer: int) -> list[Session]:
        for link in sinks.values():
            link.send(frame)
        return []

    def send(self, frame: Frame) -> bool:
        cursor = self.cursor
        for payload in frame.payloads:
            if cursor.frozen:
                break
            cursor.advance(payload)
            self.events.append(payload)
            self.size += len(payload)
            cursor.frozen = self.size >= self.limit
        self.arrived.set()
        return True

    def ping(self) -> None:
        return None

    def close(self, code: int, reason: str) -> None:
        self.arrived.set()  # answer now with what there is


def poll_timeout(node: Node, request: web.Request) -> float:
    text = request.query.get("timeout")
    limit = node.settings.poll_timeout
    if text is None:
        return limit
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= limit:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"timeout must be 0-{limit:g} seconds")
    return value


async def poll_handler(request: web.Request) -> web.StreamResponse:
    """``GET /poll``: the events after the cursor, waiting for some if there are none."""
    node = request.app[NODE_KEY]
    try:
        if node.state != "ready":
            raise ProtocolError(ErrorCode.UNAVAILABLE, "the server is not accepting connections")
        claims = claims_of(request)
        positions = positions_of(request)
        timeout = poll_timeout(node, request)
    except ProtocolError as error:
        return error_response(error)
    first = "session" not in request.query and "X-Roomcast-Session" not in request.headers
    cursor = Cursor({room: positions[room] for room in claims.rooms if room in positions})
    link = PollTransport(cursor, node.settings.max_buffer)
    previous = node.sessions.get(claims.sid)
    if previous is not None and isinstance(previous.transport, PollTransport):
        # an earlier poll of this session still waits here: it answers now
        previous.transport.close(1000, "another poll of this session came")
    session = node.open_session(
        link, claims.identity, session_id=claims.sid, announce=False, welcome=False
    )
    try:
        expired = await join_rooms(node, session, claims.rooms, positions, cursor)
        node.touch_presence(list(claims.rooms), session.member)
        if expired:
            return expired_response(expired, cursor, positions)
        if first:
            welcome = Welcome(claims.sid, node.settings.node_id, number(node.settings.heartbeat))
            link.events.insert(0, encode(welcome))
        elif not link.events and timeout > 0 and not session.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(link.arrived.wait(), timeout)
        return answer(node, claims, link)  # no await from here to the session's end
    except ProtocolError as error:
        return error_response(error)
    finally:
        node.close_session(session)


def answer(node: Node, claims: SessionClaims, link: PollTransport) -> web.Response:
    token = node.signer.issue(claims).encode()
    body = b"".join((
        b'{"type":"poll","session":"', token, b'","node":', encode(node.settings.node_id),
        b',"cursor":"', str(link.cursor).encode(), b'","events":[', b",".join(link.events),
        b"]}",
    ))  # fmt: skip
    return json_body(body)

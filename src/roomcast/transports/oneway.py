"""What SSE and long polling share: who the client is, which rooms it reads, and where
it stands in each (its cursor), all carried by the client so that any node serves it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from roomcast.cursor import Positions, decode_cursor, encode_cursor
from roomcast.exceptions import ErrorCode, ProtocolError
from roomcast.http.errors import json_body
from roomcast.protocol import Header, Since, check_room, encode, event_header
from roomcast.session import new_session_id
from roomcast.tokens import SessionClaims
from roomcast.transports.websocket import NODE_KEY, identify

if TYPE_CHECKING:
    from roomcast.node import Node
    from roomcast.session import Session


class Cursor:
    """A client's positions, moved forward by each message it is sent."""

    __slots__ = ("_parts", "frozen")

    def __init__(self, positions: Positions | None = None) -> None:
        self._parts: dict[str, str] = {}  # room -> "room~epoch~offset"
        # Set when a long poll's answer is full: what comes after is not sent, so the
        # cursor stays where the answer ends.
        self.frozen = False
        for room, (epoch, offset) in (positions or {}).items():
            self.at(room, epoch, offset)

    def at(self, room: str, epoch: str, offset: int) -> None:
        if not self.frozen or room not in self._parts:
            self._parts[room] = f"{room}~{epoch}~{offset}"

    def moved(self, header: Header) -> None:
        """A ``message`` event was sent: the client is at its offset."""
        if not self.frozen:
            room = header.room
            self._parts[room] = f"{room}~{header.epoch}~{header.offset}"  # type: ignore[index]

    def advance(self, payload: bytes) -> None:
        """Note the position of ``payload`` if it is a ``message`` event."""
        if payload.startswith(b'{"type":"message"'):
            self.moved(event_header(payload))

    def positions(self) -> Positions:
        return {room: _position(part) for room, part in self._parts.items()}

    def copy_from(self, other: Cursor) -> None:
        """Stand where ``other`` stands (a cursor that was where this one is)."""
        if not self.frozen:
            self._parts = dict(other._parts)

    def __str__(self) -> str:
        return ",".join(self._parts.values())


def _position(part: str) -> tuple[str, int]:
    _, epoch, offset = part.rsplit("~", 2)
    return epoch, int(offset)


def claims_of(request: web.Request, *, refreshing: bool = False) -> SessionClaims:
    """The session of the request: from its session token (``?session=``), or a new one
    for the rooms in ``?rooms=a,b``, as the user of the connection token (or the name in
    ``?name=``). ``token_expired`` once the connection token has expired (and its grace
    passed), unless ``refreshing``."""
    node = request.app[NODE_KEY]
    token = request.query.get("session") or request.headers.get("X-Roomcast-Session")
    if token:
        claims = node.signer.verify(token)
        if not refreshing and claims.identity.expired(node.settings.token_grace):
            raise ProtocolError(ErrorCode.TOKEN_EXPIRED, "the connection token expired")
        return claims
    identity = identify(node, request)
    rooms = parse_rooms(node, request.query.get("rooms", ""))
    return SessionClaims.of(new_session_id(), identity, tuple(rooms))


def parse_rooms(node: Node, text: str) -> list[str]:
    names = [name for name in text.split(",") if name]
    if not names:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "name the rooms to read: ?rooms=a,b")
    limit = node.settings.max_rooms
    if len(names) > limit:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"too many rooms: at most {limit}")
    return list(dict.fromkeys(check_room(name) for name in names))


def positions_of(request: web.Request) -> Positions:
    """Where the client stands: ``Last-Event-ID`` (an SSE reconnect) or ``?cursor=``."""
    text = request.headers.get("Last-Event-ID") or request.query.get("cursor", "")
    return decode_cursor(text)


async def join_rooms(
    node: Node,
    session: Session,
    rooms: tuple[str, ...],
    positions: Positions,
    cursor: Cursor,
    *,
    reply: bool = False,
) -> list[str]:
    """Join every room, replaying from ``positions`` (and sending each join's ``ok`` if
    ``reply``); the rooms whose replay was not possible (another epoch, or history no
    longer reaches back that far)."""
    expired: list[str] = []
    for room in rooms:
        known = positions.get(room)
        since = None if known is None else Since(epoch=known[0], offset=known[1])
        ok = await node.join(session, room, since)
        assert ok.epoch is not None and ok.offset is not None
        cursor.at(room, ok.epoch, ok.offset)  # no await since the join: nothing after it
        if reply:
            session.reply(encode(ok))
        if ok.recovered is False:
            expired.append(room)
    return expired


def expired_response(rooms: list[str], cursor: Cursor, positions: Positions) -> web.Response:
    """409 ``cursor_expired``: the ``rooms`` whose missed messages are lost, and the cursor
    to go on from: those rooms at their newest offset, every other room where the request
    had it (its missed messages are still in history, for the next request)."""
    current = cursor.positions()
    resume = Cursor({
        room: position if room in rooms or room not in positions else positions[room]
        for room, position in current.items()
    })  # fmt: skip
    message = (
        f"the messages missed in {', '.join(rooms)} are no longer in history "
        "(another epoch, or older than what is kept); go on from the cursor given here"
    )
    body = {"type": "error", "code": ErrorCode.CURSOR_EXPIRED, "message": message,
            "rooms": rooms, "cursor": str(resume)}  # fmt: skip
    return json_body(encode(body), 409)


__all__ = [
    "Cursor", "claims_of", "encode_cursor", "expired_response", "join_rooms", "parse_rooms",
    "positions_of",
]  # fmt: skip

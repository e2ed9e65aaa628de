"""``POST /send``: the commands of SSE and long-poll clients.

The body is a protocol command, exactly as on WebSocket; the session token of the
client's ``welcome`` goes in ``?session=`` or the ``X-Roomcast-Session`` header. The
answer is the same ``ok`` or ``error`` frame as on WebSocket (an error with its HTTP
status). ``join`` and ``leave`` answer with a new token (``session``): a one-way
client's rooms are the ones its token names, and its next poll or stream uses it.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import TYPE_CHECKING, ClassVar, Final

import msgspec
from aiohttp import web

from roomcast.exceptions import BrokerError, ErrorCode, ProtocolError
from roomcast.frame import Frame
from roomcast.http.errors import STATUS, error_response, json_body
from roomcast.protocol import (
    Command,
    Join,
    Leave,
    Member,
    Ok,
    Refresh,
    check_room,
    decode_command,
    encode,
    event_header,
)
from roomcast.ratelimit import TokenBucket
from roomcast.session import Session
from roomcast.transports.base import Sinks
from roomcast.transports.websocket import NODE_KEY

if TYPE_CHECKING:
    from roomcast.node import Node
    from roomcast.tokens import SessionClaims

REPLY_TIMEOUT: Final = 30.0  # a publish is answered within the broker's own timeouts
MAX_BUCKETS: Final = 100_000


class ReplyTransport:
    """Takes the one reply of a command sent over HTTP."""

    kind: ClassVar[str] = "reply"
    pongs: ClassVar[bool] = False

    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    @property
    def sink(self) -> ReplyTransport:
        return self

    @staticmethod
    def broadcast(frame: Frame, sinks: Sinks, max_buffer: int) -> list[Session]:
        return []

    def send(self, frame: Frame) -> bool:
        if not self.reply.done():
            self.reply.set_result(frame.payloads[0])
        return True

    def ping(self) -> None:
        return None

    def close(self, code: int, reason: str) -> None:
        return None


class Buckets:
    """The publish rate limit of each one-way session on this node (the most recent
    ``MAX_BUCKETS`` sessions)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def of(self, sid: str) -> TokenBucket:
        bucket = self._buckets.pop(sid, None) or TokenBucket(self.rate, self.burst)
        self._buckets[sid] = bucket
        if len(self._buckets) > MAX_BUCKETS:
            self._buckets.popitem(last=False)
        return bucket


BUCKETS_KEY: Final = web.AppKey("buckets", Buckets)


async def send_handler(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    try:
        token = request.query.get("session") or request.headers.get("X-Roomcast-Session")
        if not token:
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "send the session token: ?session=T")
        claims = node.signer.verify(token)
        command = decode_command(await _body(request, node), node.settings.max_json_depth)
        if not isinstance(command, Refresh) and claims.identity.expired(node.settings.token_grace):
            raise ProtocolError(ErrorCode.TOKEN_EXPIRED, "the connection token expired")
        match command:
            case Refresh():
                payload = _refresh(node, claims, command)
            case Join():
                payload = await _join(node, claims, command)
            case Leave():
                payload = _leave(node, claims, command)
            case _:
                payload = await _execute(request, node, claims, command)
    except ProtocolError as error:
        return error_response(error)
    if event_header(payload).type == "error":
        code = msgspec.json.decode(payload, type=ErrorBody).code
        return json_body(payload, STATUS.get(code, 400))
    return json_body(payload)


class ErrorBody(msgspec.Struct):
    code: str


def _with_token(reply: bytes, token: str) -> bytes:
    """``reply`` (an ``ok``) with the client's new session token in ``session``."""
    return reply[:-1] + b',"session":"' + token.encode() + b'"}'


async def _body(request: web.Request, node: Node) -> bytes:
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = node.settings.max_message_size
        raise ProtocolError(ErrorCode.TOO_LARGE, f"the body is larger than {limit} bytes") from None


def _refresh(node: Node, claims: SessionClaims, command: Refresh) -> bytes:
    """A new connection token: a new session token with its expiry and grants."""
    identity = node.auth.verify(command.token)
    if claims.anonymous or identity.user != claims.user:
        message = "a refresh token must be for the connection's user"
        raise ProtocolError(ErrorCode.FORBIDDEN, message, command.id)
    ok = Ok(id=command.id, expires=int(identity.expires))
    return _with_token(encode(ok), node.signer.issue(claims.with_identity(identity)))


async def _join(node: Node, claims: SessionClaims, command: Join) -> bytes:
    room = check_room(command.room, command.id)
    node.auth.check_join(claims.identity, room, command.id)
    if room not in claims.rooms and len(claims.rooms) >= node.settings.max_rooms:
        limit = node.settings.max_rooms
        raise ProtocolError(ErrorCode.RATE_LIMITED, f"already in {limit} rooms", command.id)
    try:
        position = (await node.broker.read(room, limit=0)).position
    except BrokerError as exc:
        raise ProtocolError(ErrorCode.UNAVAILABLE, f"room unavailable: {exc}", command.id) from exc
    rooms = claims.rooms if room in claims.rooms else (*claims.rooms, room)
    ok = Ok(id=command.id, room=room, epoch=position.epoch, offset=position.offset)
    return _with_token(encode(ok), node.signer.issue(claims.with_rooms(rooms)))


def _leave(node: Node, claims: SessionClaims, command: Leave) -> bytes:
    if command.room not in claims.rooms:
        raise ProtocolError(ErrorCode.NOT_JOINED, f"not in room {command.room!r}", command.id)
    node.presence_agent.left(command.room, Member(claims.sid, claims.user))
    rooms = tuple(room for room in claims.rooms if room != command.room)
    ok = Ok(id=command.id, room=command.room)
    return _with_token(encode(ok), node.signer.issue(claims.with_rooms(rooms)))


async def _execute(
    request: web.Request, node: Node, claims: SessionClaims, command: Command
) -> bytes:
    """publish, presence, history, ping: as a session of the client's, for one reply."""
    link = ReplyTransport()
    session = Session(node, link, claims.identity, session_id=claims.sid, announce=False)
    session.rooms.update(claims.rooms)
    session.bucket = request.app[BUCKETS_KEY].of(claims.sid)
    await session.execute(command)
    try:
        return await asyncio.wait_for(asyncio.shield(link.reply), REPLY_TIMEOUT)
    except TimeoutError:
        raise ProtocolError(ErrorCode.UNAVAILABLE, "no answer in time") from None

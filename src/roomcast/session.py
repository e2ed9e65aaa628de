"""One client session: parses its commands, enforces its limits, sends its replies.

A session does not know which transport carries it, nor what a room is made of: it
turns frames into calls on the :class:`~roomcast.node.Node` and results into frames.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from functools import partial
from typing import TYPE_CHECKING

from roomcast.auth import Identity
from roomcast.brokers.base import Publication
from roomcast.exceptions import ErrorCode, ProtocolError
from roomcast.frame import Frame
from roomcast.logs import auth_failure
from roomcast.protocol import (
    Command,
    CommandId,
    History,
    Join,
    Leave,
    Member,
    Ok,
    Ping,
    Pong,
    Presence,
    Publish,
    Refresh,
    decode_command,
    encode,
    encode_error,
)
from roomcast.ratelimit import TokenBucket
from roomcast.transports.base import Transport

if TYPE_CHECKING:
    from roomcast.node import Node

log = logging.getLogger("roomcast.session")


def new_session_id() -> str:
    return secrets.token_urlsafe(9)


class Session:
    __slots__ = (
        "announce", "awaiting_pong", "bucket", "closed", "expiry", "id", "identity", "member",
        "node", "rooms", "transport",
    )  # fmt: skip

    def __init__(
        self,
        node: Node,
        transport: Transport,
        identity: Identity | str,
        *,
        session_id: str | None = None,
        announce: bool = True,
    ) -> None:
        self.node = node
        self.transport = transport
        self.id = session_id or new_session_id()
        # A bare name is a user with no limits (tests, and the node's own sessions).
        self.identity = identity if isinstance(identity, Identity) else Identity(identity)
        self.member = Member(self.id, self.identity.user)
        self.expiry: asyncio.TimerHandle | None = None  # closes it when its token expires
        # False for the brief sessions of a long poll: their presence is kept by the poll
        # itself (with a deadline), not by their joining and leaving rooms.
        self.announce = announce
        self.rooms: set[str] = set()
        settings = node.settings
        self.bucket = TokenBucket(settings.publish_rate, settings.publish_burst)
        self.closed = False
        self.awaiting_pong = False

    @property
    def user(self) -> str:
        return self.member.user

    def send(self, frame: Frame) -> None:
        """Queue a frame; a client whose buffer overflows is disconnected as slow."""
        if self.closed:
            return
        if not self.transport.send(frame):
            self.overflowed()

    def overflowed(self) -> None:
        """The outbound buffer is over its bound: the client is too slow."""
        self.node.disconnect_slow(self)

    def reply(self, payload: bytes) -> None:
        self.send(Frame(payload))

    def fail(self, error: ProtocolError, command_id: CommandId = None) -> None:
        """Send the ``error`` frame of ``error`` (counted in the node's metrics, unless it
        is the reply of a ``POST /send``: its HTTP answer is counted)."""
        if self.transport.kind != "reply":
            self.node.meter.error(error.code)
        if error.code == ErrorCode.UNAUTHORIZED:  # a refresh with a token that is not good
            auth_failure(log, error.message, session=self.id)
        self.reply(encode_error(error, command_id))

    def touch(self) -> None:
        """The client sent something: it is alive."""
        self.awaiting_pong = False

    async def handle(self, data: str | bytes) -> None:
        """Handle one frame from the client; errors become ``error`` frames."""
        self.awaiting_pong = False
        try:
            command = decode_command(data, self.node.settings.max_json_depth)
        except ProtocolError as error:
            self.fail(error)
            return
        await self.execute(command)

    async def execute(self, command: Command) -> None:
        """Run a decoded command; its reply, or its error, is sent to the client."""
        try:
            await self._dispatch(command)
        except ProtocolError as error:
            self.fail(error, command.id)
        except Exception:  # a bug: fail this command, keep the session and the server
            log.exception("session %s: %s command failed", self.id, type(command).__name__)
            self.fail(ProtocolError(ErrorCode.UNAVAILABLE, "internal error", command.id))

    async def _dispatch(self, command: Command) -> None:
        node = self.node
        match command:
            case Publish():
                self._publish(command)
            case Join():
                self._check_room_limit(command)
                self.reply(encode(await node.join(self, command.room, command.since, command.id)))
            case Leave():
                node.leave(self, command.room, command.id)
                self.reply(encode(Ok(id=command.id, room=command.room)))
            case Presence():
                self._require_member(command.room, command.id)
                node.auth.check_presence(command.room, command.id)
                members = await node.presence(command.room)
                self.reply(encode(Ok(id=command.id, room=command.room, members=members)))
            case History():
                self._require_member(command.room, command.id)
                reply = await node.history(command.room, command.limit, command.before)
                self.reply(encode(_with_id(reply, command.id)))
            case Ping():
                self.reply(encode(Pong(id=command.id)))
            case Refresh():
                self.refresh(node.auth.verify(command.token), command.id)
                self.reply(encode(Ok(id=command.id, expires=int(self.identity.expires))))

    def refresh(self, identity: Identity, command_id: CommandId = None) -> None:
        """Go on with a new token of the same user; its expiry replaces the old one."""
        if self.identity.anonymous or identity.user != self.identity.user:
            raise ProtocolError(
                ErrorCode.FORBIDDEN, "a refresh token must be for the connection's user",
                command_id,
            )  # fmt: skip
        self.identity = identity
        self.node.watch_expiry(self)

    def _publish(self, command: Publish) -> None:
        self._require_member(command.room, command.id)
        node = self.node
        node.auth.check_publish(self.identity, command.room, command.id)
        if len(command.data) > node.settings.max_data_size:
            raise ProtocolError(
                ErrorCode.TOO_LARGE,
                f"data is larger than {node.settings.max_data_size} bytes",
                command.id,
            )
        if not self.bucket.take():
            raise ProtocolError(ErrorCode.RATE_LIMITED, "publishing too fast", command.id)
        future = node.publish(command.room, command.data, self.member)
        future.add_done_callback(partial(self._published, command.id))

    def _published(self, command_id: CommandId, future: asyncio.Future[Publication]) -> None:
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self.fail(ProtocolError(ErrorCode.UNAVAILABLE, f"not published: {error}", command_id))
            return
        pub = future.result()
        self.reply(encode(Ok(id=command_id, room=pub.room, epoch=pub.epoch, offset=pub.offset)))

    def _require_member(self, room: str, command_id: CommandId) -> None:
        if room not in self.rooms:
            raise ProtocolError(ErrorCode.NOT_JOINED, f"join room {room!r} first", command_id)

    def _check_room_limit(self, command: Join) -> None:
        limit = self.node.settings.max_rooms
        if command.room not in self.rooms and len(self.rooms) >= limit:
            raise ProtocolError(
                ErrorCode.RATE_LIMITED, f"already in {limit} rooms, the most allowed", command.id
            )


def _with_id(reply: Ok, command_id: CommandId) -> Ok:
    reply.id = command_id
    return reply

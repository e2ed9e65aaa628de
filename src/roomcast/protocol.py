"""Protocol v1, sans I/O: bytes in, commands out; events in, bytes out.

Nothing here touches a socket. ``decode_command`` turns one client frame into a typed
command (or raises :class:`ProtocolError` with the right error code), and the
``encode_*`` functions build the JSON of every server frame. See docs/protocol.md.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Final

import msgspec
from msgspec import Raw, Struct

from roomcast.exceptions import ErrorCode, ProtocolError
from roomcast.jsondepth import too_deep

CommandId = str | int | None

ROOM_PATTERN: Final = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
MAX_HISTORY_LIMIT: Final = 1000
TOO_DEEP: Final = "the JSON is nested too deeply"
DEFAULT_HISTORY_LIMIT: Final = 100
DEFAULT_MAX_DEPTH: Final = 32  # --max-json-depth


Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]  # what history stores take


class Since(Struct, frozen=True):
    epoch: str
    offset: Int64


class Join(Struct, tag="join", tag_field="type", frozen=True):
    room: str
    id: CommandId = None
    since: Since | None = None


class Leave(Struct, tag="leave", tag_field="type", frozen=True):
    room: str
    id: CommandId = None


class Publish(Struct, tag="publish", tag_field="type", frozen=True):
    room: str
    data: Raw
    id: CommandId = None


class Presence(Struct, tag="presence", tag_field="type", frozen=True):
    room: str
    id: CommandId = None


class History(Struct, tag="history", tag_field="type", frozen=True):
    room: str
    limit: Int64 = DEFAULT_HISTORY_LIMIT
    before: Int64 | None = None
    id: CommandId = None


class Ping(Struct, tag="ping", tag_field="type", frozen=True):
    id: CommandId = None


class Refresh(Struct, tag="refresh", tag_field="type", frozen=True):
    """A new connection token for the same user, before the current one expires."""

    token: str
    id: CommandId = None


Command = Join | Leave | Publish | Presence | History | Ping | Refresh
RoomCommand = Join | Leave | Publish | Presence | History
COMMAND_TYPES: Final = frozenset(
    {"join", "leave", "publish", "presence", "history", "ping", "refresh"}
)

_command_decoder: Final = msgspec.json.Decoder(Command)
_any_decoder: Final = msgspec.json.Decoder()


def decode_command(frame: str | bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Command:
    """Parse and validate one client frame, whose JSON nests at most ``max_depth`` deep.

    Raises :class:`ProtocolError` with ``bad_request``, ``unknown_type`` or
    ``invalid_room``; the error carries the command's id when one could be read.
    """
    if isinstance(frame, bytes):  # over HTTP; WebSocket text frames come checked
        try:
            frame = frame.decode()
        except UnicodeDecodeError:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "the frame is not valid UTF-8") from None
    if too_deep(frame, max_depth):
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{TOO_DEEP} (more than {max_depth} levels)")
    try:
        command: Command = _command_decoder.decode(frame)
    except msgspec.ValidationError as exc:
        raise _explain(frame, exc) from None
    except msgspec.DecodeError:
        raise ProtocolError(ErrorCode.BAD_REQUEST, "the frame is not valid JSON") from None
    except RecursionError:
        raise ProtocolError(ErrorCode.BAD_REQUEST, TOO_DEEP) from None
    except UnicodeError:  # a str with a lone surrogate: no UTF-8 for it
        raise ProtocolError(ErrorCode.BAD_REQUEST, "the frame is not valid UTF-8") from None
    if not isinstance(command, Ping | Refresh):
        check_room(command.room, command.id)
        if isinstance(command, History) and command.limit < 1:
            raise ProtocolError(ErrorCode.BAD_REQUEST, "`limit` must be at least 1", command.id)
    return command


def _explain(frame: str | bytes, exc: msgspec.ValidationError) -> ProtocolError:
    """Find out why a well-formed JSON frame is not a valid command (the slow path)."""
    try:
        value: Any = _any_decoder.decode(frame)
    except msgspec.DecodeError:
        return ProtocolError(ErrorCode.BAD_REQUEST, "the frame is not valid JSON")
    except RecursionError:
        return ProtocolError(ErrorCode.BAD_REQUEST, TOO_DEEP)
    if not isinstance(value, dict):
        return ProtocolError(ErrorCode.BAD_REQUEST, "a command must be a JSON object")
    raw_id = value.get("id")
    command_id = raw_id if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) else None
    kind = value.get("type")
    if not isinstance(kind, str):
        return ProtocolError(ErrorCode.BAD_REQUEST, "missing or mistyped field `type`", command_id)
    if kind not in COMMAND_TYPES:
        return ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown command type {kind!r}", command_id)
    return ProtocolError(ErrorCode.BAD_REQUEST, str(exc), command_id)


def check_room(room: str, command_id: CommandId = None) -> str:
    """Return ``room`` if it is a valid room name, else raise ``invalid_room``."""
    if ROOM_PATTERN.fullmatch(room) is None:
        raise ProtocolError(
            ErrorCode.INVALID_ROOM,
            "room names are 1-128 characters of A-Za-z0-9_.:@-",
            command_id,
        )
    return room


# -- server frames -------------------------------------------------------------------


class Member(Struct, frozen=True):
    session: str
    user: str


class Welcome(Struct, tag="welcome", tag_field="type", omit_defaults=True):
    session: str
    node: str
    heartbeat: float
    token: str | None = None  # SSE and long polling: the session token for POST /send


class Message(Struct, tag="message", tag_field="type", rename={"sender": "from"}):
    room: str
    epoch: str
    offset: int
    data: Raw
    sender: Member | None
    ts: int


class MemberEvent(Struct, tag_field="type"):
    room: str
    member: Member


class Joined(MemberEvent, tag="joined"):
    pass


class Left(MemberEvent, tag="left"):
    pass


class Error(Struct, tag="error", tag_field="type", omit_defaults=True):
    code: str
    message: str
    id: CommandId = None
    room: str | None = None


class Pong(Struct, tag="pong", tag_field="type", omit_defaults=True):
    id: CommandId = None


class Ok(Struct, tag="ok", tag_field="type", omit_defaults=True):
    """A reply; only the fields the command's reply has are set (docs/protocol.md)."""

    id: CommandId = None
    room: str | None = None
    epoch: str | None = None
    offset: int | None = None
    recovered: bool | None = None
    members: list[Member] | None = None
    messages: list[Raw] | None = None
    expires: int | None = None  # refresh: when the new token ends (unix time; 0: never)


class Header(Struct):
    """The fields of a server event that one-way transports need to route and resume."""

    type: str
    room: str | None = None
    epoch: str | None = None
    offset: int | None = None


event_header: Final = msgspec.json.Decoder(Header).decode

_encoder: Final = msgspec.json.Encoder()
encode = _encoder.encode


def encode_error(error: ProtocolError, command_id: CommandId = None) -> bytes:
    """The ``error`` frame for ``error``; ``command_id`` wins over the error's own id."""
    frame_id = command_id if command_id is not None else error.command_id
    return encode(Error(id=frame_id, code=error.code, message=error.message, room=error.room))


def encode_message(
    room: str, epoch: str, offset: int, data: Raw, sender: Member | None, ts: int
) -> bytes:
    return encode(Message(room, epoch, offset, data, sender, ts))

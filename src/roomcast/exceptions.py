"""Every exception roomcast raises, in one tree.

    RoomcastError
    ├── ProtocolError          a command refused with a protocol error code
    ├── ConfigError            bad settings, found before the server starts
    ├── BrokerError            the broker or history store failed (code ``unavailable``)
    └── ClientError            raised by :class:`roomcast.Client`
        ├── CommandError       the server answered a command with ``error``
        └── ConnectionLost     the connection dropped before the reply came
"""

from __future__ import annotations

from typing import Final


class ErrorCode:
    """The error codes of protocol v1 (docs/protocol.md)."""

    BAD_REQUEST: Final = "bad_request"
    UNKNOWN_TYPE: Final = "unknown_type"
    INVALID_ROOM: Final = "invalid_room"
    NOT_JOINED: Final = "not_joined"
    FORBIDDEN: Final = "forbidden"
    TOO_LARGE: Final = "too_large"
    RATE_LIMITED: Final = "rate_limited"
    UNAVAILABLE: Final = "unavailable"
    # HTTP only: no or a wrong API key or session token.
    UNAUTHORIZED: Final = "unauthorized"
    # The connection token expired: get a new one (HTTP 401; `refresh` on a connection).
    TOKEN_EXPIRED: Final = "token_expired"
    # SSE and long polling: the cursor's epoch is gone, or history no longer reaches it.
    CURSOR_EXPIRED: Final = "cursor_expired"


class CloseCode:
    """WebSocket close codes the server sends (docs/protocol.md)."""

    NORMAL: Final = 1000
    MESSAGE_TOO_BIG: Final = 1009
    INTERNAL_ERROR: Final = 1011
    SERVICE_RESTART: Final = 1012
    SLOW_CONSUMER: Final = 4001
    HEARTBEAT_TIMEOUT: Final = 4002
    TOKEN_EXPIRED: Final = 4003  # the token expired and no `refresh` came in the grace
    ADMIN_DISCONNECT: Final = 4004  # disconnected by an administrator (the admin page)


class RoomcastError(Exception):
    """Base class of every roomcast exception."""


class ProtocolError(RoomcastError):
    """A command is refused; becomes an ``error`` frame with ``code``."""

    def __init__(
        self, code: str, message: str, command_id: str | int | None = None, room: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.command_id = command_id
        self.room = room  # the room refused, where one is (`forbidden` on join)


class ConfigError(RoomcastError):
    """The settings are inconsistent or unusable."""


class BrokerError(RoomcastError):
    """The broker or the history store cannot do what was asked right now."""


class ClientError(RoomcastError):
    """Base class of the errors raised by the client library."""


class CommandError(ClientError):
    """The server answered a command with an ``error`` frame."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConnectionLost(ClientError):
    """The connection dropped before the server answered a command."""

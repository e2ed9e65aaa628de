"""Cursors: where a one-way client (SSE, long polling) stands in each of its rooms.

A cursor is text, ``room~epoch~offset`` per room joined by ``,``: for example
``lobby~3f2a91c0~12,news~3f2a91c0~4``. ``~`` and ``,`` cannot occur in room names or
epochs, so it needs no escaping in an SSE ``id:`` line or a query string. The server
keeps nothing between two requests of a client: the cursor says what it has seen, so
any node can serve its next request.
"""

from __future__ import annotations

import re
from typing import Final

from roomcast.exceptions import ErrorCode, ProtocolError
from roomcast.protocol import ROOM_PATTERN

EPOCH_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_CURSOR_LENGTH: Final = 16 * 1024

Positions = dict[str, tuple[str, int]]  # room -> (epoch, offset of the newest seen)


def encode_cursor(positions: Positions) -> str:
    return ",".join(f"{room}~{epoch}~{offset}" for room, (epoch, offset) in positions.items())


def decode_cursor(text: str) -> Positions:
    """The positions in ``text``; ``bad_request`` if it is not a cursor."""
    if not text:
        return {}
    if len(text) > MAX_CURSOR_LENGTH:
        raise _invalid("the cursor is too long")
    positions: Positions = {}
    for part in text.split(","):
        fields = part.split("~")
        if len(fields) != 3:
            raise _invalid("a cursor is room~epoch~offset, joined by commas")
        room, epoch, offset = fields
        if ROOM_PATTERN.fullmatch(room) is None or EPOCH_PATTERN.fullmatch(epoch) is None:
            raise _invalid(f"the cursor names an invalid room or epoch: {part!r}")
        if not offset.isdigit() or len(offset) > 18:
            raise _invalid(f"the cursor's offset is not a number: {part!r}")
        positions[room] = (epoch, int(offset))
    return positions


def _invalid(message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_REQUEST, f"invalid cursor: {message}")

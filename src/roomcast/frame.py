"""Server frames encoded once, with their wire forms built lazily, once per transport kind.

Fan-out hands the same :class:`Frame` to every member of a room, so a message is
JSON-encoded once and WebSocket-framed once, however many members receive it. A frame
may hold several events (the messages of one commit, in order): each member then gets
them all in one write.
"""

from __future__ import annotations

import struct
from typing import Final

from roomcast.protocol import Header, event_header

_LEN16: Final = struct.Struct("!BBH")
_LEN64: Final = struct.Struct("!BBQ")
_TEXT: Final = 0x81  # FIN + opcode 1 (text)
_BINARY: Final = 0x82  # FIN + opcode 2 (binary)


def _websocket_frame(first: int, payload: bytes) -> bytes:
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return _LEN16.pack(first, 126, size) + payload
    return _LEN64.pack(first, 127, size) + payload


def websocket_text_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented RFC 6455 text frame (server to client) holding ``payload``."""
    return _websocket_frame(_TEXT, payload)


def websocket_binary_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented RFC 6455 binary frame (server to client): ``/echo`` only."""
    return _websocket_frame(_BINARY, payload)


class Frame:
    """Encoded server events (``payloads``: one JSON document each) and their wire forms."""

    __slots__ = ("_sse", "_websocket", "payloads")

    def __init__(self, *payloads: bytes) -> None:
        self.payloads = payloads
        self._websocket: bytes | None = None
        self._sse: list[tuple[Header | None, bytes]] | None = None

    @property
    def websocket(self) -> bytes:
        """Every event as a WebSocket text frame, back to back."""
        data = self._websocket
        if data is None:
            if len(self.payloads) == 1:
                data = websocket_text_frame(self.payloads[0])
            else:
                data = b"".join(map(websocket_text_frame, self.payloads))
            self._websocket = data
        return data

    @property
    def sse(self) -> list[tuple[Header | None, bytes]]:
        """Every event as the start of an SSE event, up to its ``id:`` (which is each
        client's own cursor), with the header of each ``message`` (None for others)."""
        events = self._sse
        if events is None:
            events = []
            for payload in self.payloads:
                header = event_header(payload)
                start = b"event: " + header.type.encode() + b"\ndata: " + payload + b"\nid: "
                events.append((header if header.type == "message" else None, start))
            self._sse = events
        return events

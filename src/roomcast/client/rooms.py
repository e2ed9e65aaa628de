"""Where the client stands in each of its rooms: the stream position it delivered up to.

The position (epoch, offset) of the last message handed to the app is what a rejoin
sends as ``since``, and what every incoming message is checked against, so the app sees
each message of a room exactly once and in order, across reconnections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeGuard

Frame = dict[str, Any]


@dataclass(slots=True)
class RoomState:
    epoch: str
    offset: int  # the newest offset delivered to the app (or the join's starting point)
    lost: bool = False  # messages were missed that could not be recovered
    joining: bool = False  # a join with ``since`` is in flight: accept its replay
    retired: set[str] = field(default_factory=set)  # epochs replaced by a newer one


class RoomTracker:
    """The rooms the client is in, by name, and the dedup rule of their messages."""

    def __init__(self) -> None:
        self._rooms: dict[str, RoomState] = {}

    def __contains__(self, room: object) -> bool:
        return room in self._rooms

    def names(self) -> list[str]:
        """The rooms to rejoin after a reconnection (joins still in flight excluded)."""
        return [name for name, state in self._rooms.items() if not state.joining]

    def position(self, room: str) -> tuple[str, int] | None:
        state = self._rooms.get(room)
        return None if state is None else (state.epoch, state.offset)

    def since(self, room: str) -> dict[str, Any]:
        state = self._rooms[room]
        return {"epoch": state.epoch, "offset": state.offset}

    def lost(self, room: str) -> bool:
        state = self._rooms.get(room)
        return state is not None and state.lost

    def expect(self, room: str, epoch: str, offset: int) -> None:
        """A join with ``since`` is about to be sent: its replay must get through."""
        self._rooms[room] = RoomState(epoch, offset, joining=True)

    def forget(self, room: str) -> None:
        self._rooms.pop(room, None)

    def forget_joining(self, room: str) -> None:
        """Drop ``room`` if its join never completed."""
        state = self._rooms.get(room)
        if state is not None and state.joining:
            del self._rooms[room]

    def joined(self, ok: Frame) -> bool:
        """Apply the ``ok`` of a join the app asked for; True if messages were lost."""
        room, epoch, offset = _position(ok)
        state = self._rooms.get(room)
        if state is None:
            self._rooms[room] = RoomState(epoch, offset)
            return False
        state.joining = False
        if ok.get("recovered") is False or epoch != state.epoch:
            _restart(state, epoch, offset)
            return True
        return False

    def rejoined(self, ok: Frame) -> bool:
        """Apply the ``ok`` of a rejoin with ``since``; True if messages were lost."""
        room, epoch, offset = _position(ok)
        state = self._rooms.get(room)
        if state is None or ok.get("recovered") is True:
            return False
        _restart(state, epoch, offset)
        return True

    def accept(self, message: Frame) -> bool:
        """True if ``message`` is newer than what was delivered in its room (and record it)."""
        room, epoch, offset = message.get("room"), message.get("epoch"), message.get("offset")
        if not isinstance(room, str) or not isinstance(epoch, str) or not _is_int(offset):
            return False
        state = self._rooms.get(room)
        if state is None:
            return False
        if epoch in state.retired or (epoch == state.epoch and offset <= state.offset):
            return False
        if epoch != state.epoch:  # a new stream began without a join telling us
            _restart(state, epoch, offset)
        state.offset = offset
        return True


def _restart(state: RoomState, epoch: str, offset: int) -> None:
    """The stream could not be resumed: deliver from the room's current top on."""
    if epoch != state.epoch:
        state.retired.add(state.epoch)
    state.epoch, state.offset, state.lost = epoch, offset, True


def _position(ok: Frame) -> tuple[str, str, int]:
    room, epoch, offset = ok.get("room"), ok.get("epoch"), ok.get("offset")
    if not isinstance(room, str) or not isinstance(epoch, str) or not _is_int(offset):
        raise ValueError(f"a join reply without room, epoch and offset: {ok!r}")
    return room, epoch, offset


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)

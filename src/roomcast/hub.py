"""The registry of the rooms that have members on this node, and fan-out to them."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from roomcast.frame import Frame
from roomcast.metrics import Meter
from roomcast.protocol import Member

if TYPE_CHECKING:
    from roomcast.session import Session
    from roomcast.transports.base import Transport


class Room:
    """A room with local members, and the newest offset fanned out to them."""

    __slots__ = ("backlog", "count", "epoch", "groups", "members", "name", "opening", "top")

    def __init__(self, name: str, epoch: str, top: int) -> None:
        self.name = name
        self.epoch = epoch
        self.top = top
        # Members in joining order (presence), and the same members grouped by transport
        # class with their sinks, for fan-out.
        self.members: dict[Session, None] = {}
        self.groups: dict[type[Transport], dict[Session, Any]] = {}
        # Joins still in progress: the room is not closed while one is pending.
        self.opening = 0
        # While a gap in the live stream is read from history: what arrived meanwhile.
        self.backlog: list[tuple[int, bytes]] | None = None
        self.count = 0  # messages fanned out since the last sample (roomcast.stats)

    @property
    def idle(self) -> bool:
        return not self.members and self.opening == 0


class Hub:
    """Rooms by name. A room is here exactly while it has members or a join pending."""

    def __init__(self, max_buffer: int, meter: Meter | None = None) -> None:
        self.rooms: dict[str, Room] = {}
        self.max_buffer = max_buffer
        self.meter = meter or Meter()

    def __iter__(self) -> Iterator[Room]:
        return iter(self.rooms.values())

    def get(self, name: str) -> Room | None:
        return self.rooms.get(name)

    def add_room(self, room: Room) -> Room:
        return self.rooms.setdefault(room.name, room)

    def fanout(self, name: str, epoch: str, entries: Sequence[tuple[int, bytes]]) -> None:
        """Deliver messages of one room, in offset order, to every local member: encoded
        once, framed once, and written to each member in one write."""
        room = self.rooms.get(name)
        if room is None:
            return
        if epoch == room.epoch and entries[0][0] <= room.top:
            entries = [entry for entry in entries if entry[0] > room.top]  # already sent
            if not entries:
                return
        room.epoch = epoch
        room.top = entries[-1][0]
        frame = Frame(*(payload for _, payload in entries))
        max_buffer = self.max_buffer
        for kind, sinks in room.groups.items():
            for session in kind.broadcast(frame, sinks, max_buffer):
                session.overflowed()
        self.meter.fanout(room, frame)

    def add_member(self, room: Room, session: Session) -> bool:
        """Make ``session`` a member; False if it was one already."""
        if session in room.members:
            return False
        room.members[session] = None
        transport = session.transport
        room.groups.setdefault(type(transport), {})[session] = transport.sink
        self.meter.joins[transport.kind] += 1
        session.rooms.add(room.name)
        return True

    def remove_member(self, room: Room, session: Session) -> bool:
        """Remove ``session``; True if the room is now idle and gone."""
        if session not in room.members:
            return False
        del room.members[session]
        kind = type(session.transport)
        group = room.groups[kind]
        del group[session]
        if not group:
            del room.groups[kind]
        self.meter.leaves[kind.kind] += 1
        session.rooms.discard(room.name)
        return self.drop_if_idle(room)

    def drop_if_idle(self, room: Room) -> bool:
        if room.idle and self.rooms.get(room.name) is room:
            del self.rooms[room.name]
            return True
        return False

    def members(self, name: str) -> list[Member]:
        room = self.rooms.get(name)
        if room is None:
            return []
        return [session.member for session in room.members if session.announce]

    def tell(self, name: str, payload: bytes, exclude: str) -> None:
        """Send an event to the local members of a room, except session ``exclude``."""
        room = self.rooms.get(name)
        if room is None or not room.members:
            return
        frame = Frame(payload)
        for session in room.members:
            if session.id != exclude:
                session.send(frame)

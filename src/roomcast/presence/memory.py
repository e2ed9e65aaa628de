"""Presence of one node: the hub's members are the truth; long-poll members, who are
in no room between two polls, are kept here with a deadline."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from roomcast.presence.base import PresenceStore
from roomcast.protocol import Member

if TYPE_CHECKING:
    from roomcast.hub import Hub


class MemoryPresence(PresenceStore):
    def __init__(self, hub: Hub, ttl: float = 30.0) -> None:
        self.hub = hub
        self.ttl = ttl
        self.interval = ttl / 3  # the sweep of long-poll members
        self._polled: dict[str, dict[str, tuple[Member, float]]] = {}  # room -> sid -> ..

    async def add(self, room: str, member: Member, ttl: float | None = None) -> bool:
        if ttl is None:  # a member of the hub: nothing to keep
            return True
        polled = self._polled.setdefault(room, {})
        new = member.session not in polled
        polled[member.session] = (member, time.monotonic() + ttl)
        return new

    async def remove(self, room: str, member: Member) -> bool:
        polled = self._polled.get(room)
        if polled is None or polled.pop(member.session, None) is None:
            return True  # a member of the hub: it was there
        if not polled:
            del self._polled[room]
        return True

    async def members(self, room: str) -> list[Member]:
        members = self.hub.members(room)
        polled = self._polled.get(room)
        if polled:
            now = time.monotonic()
            seen = {member.session for member in members}
            members += [
                m for m, deadline in polled.values() if deadline > now and m.session not in seen
            ]
        return members

    async def expire(self, rooms: list[str]) -> dict[str, list[Member]]:
        now = time.monotonic()
        gone: dict[str, list[Member]] = {}
        for room in rooms:
            polled = self._polled.get(room, {})
            for sid, (member, deadline) in list(polled.items()):
                if deadline <= now:
                    del polled[sid]
                    gone.setdefault(room, []).append(member)
            if not polled:
                self._polled.pop(room, None)
        return gone

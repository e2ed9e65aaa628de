"""Presence of one node: the hub's members are the truth, nothing to store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from roomcast.presence.base import PresenceStore
from roomcast.protocol import Member

if TYPE_CHECKING:
    from roomcast.hub import Hub


class MemoryPresence(PresenceStore):
    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def add(self, room: str, member: Member) -> None:
        return None

    async def remove(self, room: str, member: Member) -> None:
        return None

    async def members(self, room: str) -> list[Member]:
        return self.hub.members(room)

"""The presence interface.

Every node writes its own members; entries carry an expiry that the node pushes forward
(``refresh``) while it lives, so the members of a node that died without a word expire,
and ``expire`` removes them (atomically: one caller gets each expired member, so exactly
one node announces that it left).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from roomcast.protocol import Member


class PresenceStore(ABC):
    # Seconds between refreshes and expiry sweeps; 0: the store needs neither.
    interval: float = 0.0

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    @abstractmethod
    async def add(self, room: str, member: Member, ttl: float | None = None) -> bool:
        """Store ``member`` until now + ``ttl`` (default: the store's TTL); True if it was
        not there yet (so its joining is news)."""

    @abstractmethod
    async def remove(self, room: str, member: Member) -> bool:
        """Remove ``member``; True if it was there (so its leaving is news)."""

    @abstractmethod
    async def members(self, room: str) -> list[Member]: ...

    async def refresh(self, rooms: dict[str, list[Member]]) -> None:
        """Keep this node's members of ``rooms`` alive for another TTL."""
        return None

    async def expire(self, rooms: list[str]) -> dict[str, list[Member]]:
        """Remove the expired members of ``rooms``; return them (to announce ``left``)."""
        return {}

"""Who is in a room: on this node only (one node), or across the cluster (Redis, NATS)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from roomcast.config import Settings
from roomcast.presence.base import PresenceStore

if TYPE_CHECKING:
    from roomcast.hub import Hub


def create_presence(settings: Settings, hub: Hub) -> PresenceStore:
    scheme = settings.broker.split("://", 1)[0]
    if scheme in {"redis", "rediss", "redis+cluster", "rediss+cluster"}:
        from roomcast.presence.redis import RedisPresence

        return RedisPresence(settings.broker, ttl=settings.presence_ttl)
    if scheme in {"nats", "tls"}:
        from roomcast.presence.nats import NatsPresence

        return NatsPresence.from_settings(settings)
    from roomcast.presence.memory import MemoryPresence

    return MemoryPresence(hub, settings.presence_ttl)


__all__ = ["PresenceStore", "create_presence"]

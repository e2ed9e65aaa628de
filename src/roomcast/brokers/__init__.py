"""Brokers assign offsets, keep history and carry publications between nodes.

The backend is chosen by the URL scheme of ``--broker``: ``memory://`` (one node, history
in SQLite or memory), ``redis://`` and ``rediss://`` (a cluster of nodes sharing Redis),
``redis+cluster://`` and ``rediss+cluster://`` (sharing a Redis Cluster), ``nats://`` (a
cluster of nodes sharing NATS with JetStream). Every backend keeps each room's history
size and TTL, its namespace's (:mod:`roomcast.history.limits`).
"""

from __future__ import annotations

from roomcast.brokers.base import Broker, Draft, Page, Position, Publication
from roomcast.config import Settings
from roomcast.exceptions import ConfigError


def create_broker(settings: Settings) -> Broker:
    """The broker named by ``settings.broker``, with its history store."""
    scheme = settings.broker.split("://", 1)[0]
    if scheme == "memory":
        from roomcast.brokers.memory import MemoryBroker
        from roomcast.history import create_store

        return MemoryBroker(create_store(settings))
    if scheme in {"redis", "rediss", "redis+cluster", "rediss+cluster"}:
        from roomcast.brokers.redis import RedisBroker
        from roomcast.history.limits import of_settings

        return RedisBroker(
            settings.broker, limits=of_settings(settings), sharded=settings.redis_sharded
        )
    if scheme in {"nats", "tls"}:
        from roomcast.brokers.nats import NatsBroker

        return NatsBroker.from_settings(settings)
    raise ConfigError(
        f"unknown broker {settings.broker!r}: use memory://, redis://HOST:PORT/DB, "
        "redis+cluster://HOST:PORT[,HOST:PORT...] or nats://HOST:PORT"
    )


__all__ = ["Broker", "Draft", "Page", "Position", "Publication", "create_broker"]

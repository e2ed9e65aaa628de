"""History stores for the single-node broker: SQLite on disk (default) or memory."""

from __future__ import annotations

from roomcast.config import Settings
from roomcast.history.base import HistoryStore, Record
from roomcast.history.limits import Limits, of_settings


def create_store(settings: Settings) -> HistoryStore:
    """The store ``--history`` names; each room keeps its namespace's size and TTL."""
    size, ttl, limits = settings.history_size, settings.history_ttl, of_settings(settings)
    if settings.history == "memory":
        from roomcast.history.memory import MemoryStore

        return MemoryStore(size, ttl, limits)
    from roomcast.history.sqlite import SqliteStore

    return SqliteStore(settings.history_path, size, ttl, limits)


__all__ = ["HistoryStore", "Limits", "Record", "create_store"]

"""History stores for the single-node broker: SQLite on disk (default) or memory."""

from __future__ import annotations

from roomcast.config import Settings
from roomcast.history.base import HistoryStore, Record


def create_store(settings: Settings) -> HistoryStore:
    if settings.history == "memory":
        from roomcast.history.memory import MemoryStore

        return MemoryStore(settings.history_size, settings.history_ttl)
    from roomcast.history.sqlite import SqliteStore

    return SqliteStore(settings.history_path, settings.history_size, settings.history_ttl)


__all__ = ["HistoryStore", "Record", "create_store"]

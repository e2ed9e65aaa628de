"""History in process memory: fast, and lost (with a new epoch) when the process ends."""

from __future__ import annotations

import secrets
from collections import deque

from roomcast.brokers.base import Page, Position
from roomcast.history.base import HistoryStore, Record
from roomcast.history.limits import Limits, visible


class _Stream:
    __slots__ = ("entries", "top")

    def __init__(self, size: int) -> None:
        self.top = 0
        self.entries: deque[tuple[int, int, bytes]] = deque(maxlen=size)


class MemoryStore(HistoryStore):
    def __init__(self, size: int, ttl: float, limits: Limits | None = None) -> None:
        super().__init__(size, ttl, limits)
        self.epoch = secrets.token_hex(4)
        self._streams: dict[str, _Stream] = {}

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def position(self, room: str) -> Position:
        stream = self._streams.get(room)
        return Position(self.epoch, 0 if stream is None else stream.top)

    async def append(self, records: list[Record]) -> None:
        for record in records:
            stream = self._streams.get(record.room)
            if stream is None:
                size = self.limits(record.room)[0]
                stream = self._streams[record.room] = _Stream(size)
            stream.entries.append((record.offset, record.ts, record.payload))
            stream.top = record.offset

    async def read(self, room: str, *, after: int | None, before: int | None, limit: int) -> Page:
        stream = self._streams.get(room)
        if stream is None or limit <= 0:
            return Page(Position(self.epoch, 0 if stream is None else stream.top), [])
        floor, oldest = self.window(room, stream.top)
        kept = visible((e for e in stream.entries if e[0] > floor), oldest)
        if after is not None:
            entries = [entry for entry in kept if entry[0] > after][:limit]
        else:
            if before is not None:
                kept = [entry for entry in kept if entry[0] < before]
            entries = kept[-limit:]
        return Page(Position(self.epoch, stream.top), entries)

"""The history store interface: where the single-node broker keeps messages.

A store keeps, per room, the newest offset ever assigned and the retained messages
(at most ``size`` per room, none older than ``ttl`` seconds when ``ttl`` > 0). All rooms
of a store share one epoch, made when the store is created: it changes exactly when
the history is lost (a memory store restarted, an SQLite file deleted).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

from roomcast.brokers.base import Page, Position


@dataclass(frozen=True, slots=True)
class Record:
    room: str
    offset: int
    ts: int
    payload: bytes


def now_ms() -> int:
    return int(time.time() * 1000)


class HistoryStore(ABC):
    def __init__(self, size: int, ttl: float) -> None:
        self.size = size
        self.ttl = ttl

    def oldest_kept_ts(self) -> int:
        """Messages stamped before this (Unix ms) have expired; 0 without a TTL."""
        return now_ms() - int(self.ttl * 1000) if self.ttl > 0 else 0

    epoch = ""

    def epoch_of(self) -> str:
        """The epoch of every room of this store."""
        return self.epoch

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def position(self, room: str) -> Position: ...

    @abstractmethod
    async def append(self, records: list[Record]) -> None:
        """Store ``records`` (offsets already assigned, in order) in one commit."""

    @abstractmethod
    async def read(
        self, room: str, *, after: int | None, before: int | None, limit: int
    ) -> Page: ...

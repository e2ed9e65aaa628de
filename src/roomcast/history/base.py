"""The history store interface: where the single-node broker keeps messages.

A store keeps, per room, the newest offset ever assigned and the retained messages:
at most the room's ``size``, none older than its ``ttl`` seconds when ``ttl`` > 0, both
given by ``limits(room)`` (the room's namespace, :mod:`roomcast.history.limits`), or the
same ``size`` and ``ttl`` for every room without it. All rooms of a store share one
epoch, made when the store is created: it changes exactly when the history is lost (a
memory store restarted, an SQLite file deleted).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass

from roomcast.brokers.base import Page, Position
from roomcast.history.limits import Limits, oldest_ms


@dataclass(frozen=True, slots=True)
class Record:
    room: str
    offset: int
    ts: int
    payload: bytes


def now_ms() -> int:
    return int(time.time() * 1000)


class HistoryStore(ABC):
    def __init__(self, size: int, ttl: float, limits: Limits | None = None) -> None:
        self.size = size
        self.ttl = ttl
        self.limits: Limits = limits or self._same_for_all

    def _same_for_all(self, room: str) -> tuple[int, float]:
        return self.size, self.ttl

    def window(self, room: str, top: int) -> tuple[int, int]:
        """What ``room`` may show when its newest offset is ``top``: offsets above the
        first number, messages stamped at or after the second (Unix ms, 0: any)."""
        size, ttl = self.limits(room)
        return top - size, oldest_ms(ttl, now_ms())

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

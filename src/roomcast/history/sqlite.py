"""Durable history in one SQLite file, written by one thread off the event loop.

WAL mode with ``synchronous=NORMAL``: a commit survives the server process being
killed (the guarantee roomcast gives for acknowledged messages); a power cut may lose
the last commits. Every call runs on one dedicated thread, so the event loop never
waits for the disk and the connection is never shared between threads.
"""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from roomcast.brokers.base import Page, Position
from roomcast.exceptions import BrokerError
from roomcast.history.base import HistoryStore, Record

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS streams (room TEXT PRIMARY KEY, top INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL, offset INTEGER NOT NULL, ts INTEGER NOT NULL, payload BLOB NOT NULL,
    PRIMARY KEY (room, offset)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_ts ON messages (ts);
"""
PURGE_EVERY = 10.0  # seconds between deletions of expired messages


class SqliteStore(HistoryStore):
    def __init__(self, path: Path, size: int, ttl: float) -> None:
        super().__init__(size, ttl)
        self.path = path
        self.epoch = ""
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="roomcast-sqlite")
        self._last_purge = 0.0

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = self._db
        if db is None:
            raise BrokerError("the history store is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._thread, fn, db)
        except sqlite3.Error as exc:
            raise BrokerError(f"history store failed: {exc}") from exc

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._db, self.epoch = await loop.run_in_executor(self._thread, self._connect)

    def _connect(self) -> tuple[sqlite3.Connection, str]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        row = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        if row is None:
            epoch = secrets.token_hex(4)
            db.execute("INSERT INTO meta (key, value) VALUES ('epoch', ?)", (epoch,))
            return db, epoch
        return db, str(row[0])

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._thread, db.close)
        self._thread.shutdown(wait=True)

    async def position(self, room: str) -> Position:
        return Position(self.epoch, await self._run(lambda db: _top(db, room)))

    async def append(self, records: list[Record]) -> None:
        purge_before = 0
        if self.ttl > 0 and time.monotonic() - self._last_purge > PURGE_EVERY:
            self._last_purge = time.monotonic()
            purge_before = self.oldest_kept_ts()
        await self._run(lambda db: self._append(db, records, purge_before))

    def _append(self, db: sqlite3.Connection, records: list[Record], purge_before: int) -> None:
        tops: dict[str, int] = {}
        for record in records:
            tops[record.room] = record.offset
        db.execute("BEGIN")
        try:
            db.executemany(
                "INSERT INTO messages (room, offset, ts, payload) VALUES (?, ?, ?, ?)",
                [(r.room, r.offset, r.ts, r.payload) for r in records],
            )
            db.executemany(
                "INSERT INTO streams (room, top) VALUES (?, ?) "
                "ON CONFLICT (room) DO UPDATE SET top = excluded.top",
                tops.items(),
            )
            db.executemany(
                "DELETE FROM messages WHERE room = ? AND offset <= ?",
                [(room, top - self.size) for room, top in tops.items() if top > self.size],
            )
            if purge_before:
                db.execute("DELETE FROM messages WHERE ts < ?", (purge_before,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def read(
        self, room: str, *, after: int | None, before: int | None, limit: int
    ) -> Page:
        oldest = self.oldest_kept_ts()

        def query(db: sqlite3.Connection) -> tuple[int, list[tuple[int, bytes]]]:
            if after is not None:
                rows = db.execute(
                    "SELECT offset, payload FROM messages WHERE room = ? AND offset > ? "
                    "AND ts >= ? ORDER BY offset LIMIT ?",
                    (room, after, oldest, limit),
                ).fetchall()
            else:
                rows = db.execute(
                    "SELECT offset, payload FROM messages WHERE room = ? AND offset < ? "
                    "AND ts >= ? ORDER BY offset DESC LIMIT ?",
                    (room, before if before is not None else 2**62, oldest, limit),
                ).fetchall()
                rows.reverse()
            return _top(db, room), [(int(o), bytes(p)) for o, p in rows]

        top, entries = await self._run(query)
        return Page(Position(self.epoch, top), entries)


def _top(db: sqlite3.Connection, room: str) -> int:
    row = db.execute("SELECT top FROM streams WHERE room = ?", (room,)).fetchone()
    return 0 if row is None else int(row[0])

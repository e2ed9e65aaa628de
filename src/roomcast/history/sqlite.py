"""Durable history in one SQLite file, written by one thread off the event loop.

WAL mode with ``synchronous=NORMAL``: a commit survives the server process being
killed (the guarantee roomcast gives for acknowledged messages); a power cut may lose
the last commits. Every call runs on one dedicated thread, so the event loop never
waits for the disk and the connection is never shared between threads.

Each room keeps its own size and TTL (``limits``): a commit deletes a room's messages
beyond its size; each message is stored with the time it expires (``expires``, 0: never,
from its room's TTL when written), and expired messages are deleted every
``PURGE_EVERY`` seconds. Reads apply the room's current size and TTL, whatever was
stored: a room whose namespace changed shows its new window at once.
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
from roomcast.history.base import HistoryStore, Record, now_ms
from roomcast.history.limits import Limits, oldest_ms, visible

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS streams (room TEXT PRIMARY KEY, top INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    room TEXT NOT NULL, offset INTEGER NOT NULL, ts INTEGER NOT NULL, payload BLOB NOT NULL,
    expires INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room, offset)
) WITHOUT ROWID;
"""
INDEXES = """
DROP INDEX IF EXISTS messages_ts;
CREATE INDEX IF NOT EXISTS messages_expires ON messages (expires) WHERE expires > 0;
"""
PURGE_EVERY = 10.0  # seconds between deletions of expired messages


class SqliteStore(HistoryStore):
    def __init__(self, path: Path, size: int, ttl: float, limits: Limits | None = None) -> None:
        super().__init__(size, ttl, limits)
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
        self._migrate(db)
        db.executescript(INDEXES)
        row = db.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
        if row is None:
            epoch = secrets.token_hex(4)
            db.execute("INSERT INTO meta (key, value) VALUES ('epoch', ?)", (epoch,))
            return db, epoch
        return db, str(row[0])

    def _migrate(self, db: sqlite3.Connection) -> None:
        """A file written before rooms had TTLs of their own: stamp each message with
        the time it expires under its room's TTL now."""
        if any(row[1] == "expires" for row in db.execute("PRAGMA table_info(messages)")):
            return
        db.create_function("ttl_ms", 1, self._ttl_ms, deterministic=True)
        db.execute("BEGIN")
        db.execute("ALTER TABLE messages ADD COLUMN expires INTEGER NOT NULL DEFAULT 0")
        db.execute("UPDATE messages SET expires = ts + ttl_ms(room) WHERE ttl_ms(room) > 0")
        db.execute("COMMIT")

    def _ttl_ms(self, room: str) -> int:
        return int(self.limits(room)[1] * 1000)

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
        if time.monotonic() - self._last_purge > PURGE_EVERY:
            self._last_purge = time.monotonic()
            purge_before = now_ms()
        rows = [(r.room, r.offset, r.ts, r.payload, self._expires(r)) for r in records]
        tops: dict[str, int] = {}
        for record in records:
            tops[record.room] = record.offset
        trims = [(room, top - self.limits(room)[0]) for room, top in tops.items()]
        await self._run(lambda db: _append(db, rows, tops, trims, purge_before))

    def _expires(self, record: Record) -> int:
        ttl = self.limits(record.room)[1]
        return record.ts + int(ttl * 1000) if ttl > 0 else 0

    async def read(self, room: str, *, after: int | None, before: int | None, limit: int) -> Page:
        size, ttl = self.limits(room)
        oldest = oldest_ms(ttl, now_ms())

        def query(db: sqlite3.Connection) -> tuple[int, list[tuple[int, int, bytes]]]:
            top = _top(db, room)
            if limit <= 0:
                return top, []
            floor = top - size
            if oldest:  # the newest expired message hides every older one
                row = db.execute(
                    "SELECT MAX(offset) FROM messages WHERE room = ? AND offset > ? AND ts < ?",
                    (room, floor, oldest),
                ).fetchone()
                floor = max(floor, row[0] or 0)
            return top, _rows(db, room, max(floor, after or 0), after is None, before, limit)

        top, rows = await self._run(query)
        return Page(Position(self.epoch, top), visible(rows, oldest))


def _append(
    db: sqlite3.Connection,
    rows: list[tuple[str, int, int, bytes, int]],
    tops: dict[str, int],
    trims: list[tuple[str, int]],
    purge_before: int,
) -> None:
    db.execute("BEGIN")
    try:
        db.executemany(
            "INSERT INTO messages (room, offset, ts, payload, expires) VALUES (?, ?, ?, ?, ?)",
            rows,
        )
        db.executemany(
            "INSERT INTO streams (room, top) VALUES (?, ?) "
            "ON CONFLICT (room) DO UPDATE SET top = excluded.top",
            tops.items(),
        )
        db.executemany(
            "DELETE FROM messages WHERE room = ? AND offset <= ?",
            [(room, last) for room, last in trims if last > 0],
        )
        if purge_before:
            db.execute("DELETE FROM messages WHERE expires > 0 AND expires < ?", (purge_before,))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _rows(
    db: sqlite3.Connection, room: str, floor: int, newest: bool, before: int | None, limit: int
) -> list[tuple[int, int, bytes]]:
    """Up to ``limit`` rows of ``room`` above ``floor``, oldest first: the oldest ones,
    or (``newest``) the newest ones below ``before``."""
    if not newest:
        rows = db.execute(
            "SELECT offset, ts, payload FROM messages WHERE room = ? AND offset > ? "
            "ORDER BY offset LIMIT ?",
            (room, floor, limit),
        ).fetchall()
    else:
        rows = db.execute(
            "SELECT offset, ts, payload FROM messages WHERE room = ? AND offset > ? "
            "AND offset < ? ORDER BY offset DESC LIMIT ?",
            (room, floor, before if before is not None else 2**62, limit),
        ).fetchall()
        rows.reverse()
    return [(int(o), int(t), bytes(p)) for o, t, p in rows]


def _top(db: sqlite3.Connection, room: str) -> int:
    row = db.execute("SELECT top FROM streams WHERE room = ?", (room,)).fetchone()
    return 0 if row is None else int(row[0])

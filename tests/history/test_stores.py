"""Both history stores against the same expectations, with one size and TTL for all rooms
and with each room's own; SQLite also across reopen and from its previous schema."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest

from roomcast.history import sqlite
from roomcast.history.base import HistoryStore, Record, now_ms
from roomcast.history.memory import MemoryStore
from roomcast.history.sqlite import SqliteStore


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[HistoryStore]:
    instance: HistoryStore
    if request.param == "memory":
        instance = MemoryStore(size=5, ttl=0)
    else:
        instance = SqliteStore(tmp_path / "h.sqlite3", size=5, ttl=0)
    await instance.open()
    yield instance
    await instance.close()


def records(room: str, offsets: range, ts: int | None = None) -> list[Record]:
    stamp = now_ms() if ts is None else ts
    return [Record(room, n, stamp, f'{{"n":{n}}}'.encode()) for n in offsets]


async def test_empty_room_has_offset_zero(store: HistoryStore) -> None:
    position = await store.position("nobody")
    assert position.offset == 0
    assert position.epoch == store.epoch_of() != ""
    page = await store.read("nobody", after=0, before=None, limit=10)
    assert page.entries == []


async def test_reads_newest_and_after(store: HistoryStore) -> None:
    await store.append(records("a", range(1, 4)))
    await store.append(records("b", range(1, 2)))
    assert (await store.position("a")).offset == 3
    newest = await store.read("a", after=None, before=None, limit=2)
    assert [offset for offset, _ in newest.entries] == [2, 3]
    assert newest.position.offset == 3
    after = await store.read("a", after=1, before=None, limit=10)
    assert after.entries == [(2, b'{"n":2}'), (3, b'{"n":3}')]
    before = await store.read("a", after=None, before=3, limit=10)
    assert [offset for offset, _ in before.entries] == [1, 2]


async def test_keeps_only_the_newest_size_messages(store: HistoryStore) -> None:
    await store.append(records("a", range(1, 9)))
    page = await store.read("a", after=0, before=None, limit=100)
    assert [offset for offset, _ in page.entries] == [4, 5, 6, 7, 8]
    assert page.position.offset == 8


async def test_expired_messages_are_not_read(store: HistoryStore) -> None:
    store.ttl = 60
    await store.append(records("a", range(1, 3), ts=now_ms() - 120_000))
    await store.append(records("a", range(3, 4)))
    page = await store.read("a", after=0, before=None, limit=100)
    assert [offset for offset, _ in page.entries] == [3]
    assert page.position.offset == 3


async def test_sqlite_keeps_history_and_epoch_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    first = SqliteStore(path, size=10, ttl=0)
    await first.open()
    await first.append(records("a", range(1, 4)))
    epoch = first.epoch
    await first.close()
    second = SqliteStore(path, size=10, ttl=0)
    await second.open()
    page = await second.read("a", after=1, before=None, limit=10)
    assert second.epoch == epoch
    assert [offset for offset, _ in page.entries] == [2, 3]
    await second.close()
    path.unlink()
    third = SqliteStore(path, size=10, ttl=0)
    await third.open()
    assert third.epoch != epoch
    assert (await third.position("a")).offset == 0
    await third.close()


async def test_memory_store_has_a_new_epoch_per_process() -> None:
    assert MemoryStore(1, 0).epoch != MemoryStore(1, 0).epoch


def by_namespace(room: str) -> tuple[int, float]:
    """small:* keeps 3 messages, big:* 10, brief:* 60 s; the others 5 for ever."""
    return {"small": (3, 0.0), "big": (10, 0.0), "brief": (5, 60.0)}.get(
        room.partition(":")[0], (5, 0.0)
    )


@pytest.fixture(params=["memory", "sqlite"])
async def rooms_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[HistoryStore]:
    instance: HistoryStore
    if request.param == "memory":
        instance = MemoryStore(size=1, ttl=0, limits=by_namespace)
    else:
        instance = SqliteStore(tmp_path / "h.sqlite3", size=1, ttl=0, limits=by_namespace)
    await instance.open()
    yield instance
    await instance.close()


async def offsets(store: HistoryStore, room: str, after: int | None = 0) -> list[int]:
    page = await store.read(room, after=after, before=None, limit=100)
    return [offset for offset, _ in page.entries]


async def test_each_room_keeps_its_own_size(rooms_store: HistoryStore) -> None:
    for room in ("small:a", "big:a", "other"):
        await rooms_store.append(records(room, range(1, 13)))
    assert await offsets(rooms_store, "small:a") == [10, 11, 12]
    assert await offsets(rooms_store, "big:a") == list(range(3, 13))
    assert await offsets(rooms_store, "other", after=None) == [8, 9, 10, 11, 12]
    assert await offsets(rooms_store, "small:a", after=10) == [11, 12]
    assert (await rooms_store.position("small:a")).offset == 12


async def test_each_room_keeps_its_own_ttl(rooms_store: HistoryStore) -> None:
    old = now_ms() - 120_000
    for room in ("brief:a", "other"):
        await rooms_store.append(records(room, range(1, 3), ts=old))
        await rooms_store.append(records(room, range(3, 5)))
    assert await offsets(rooms_store, "brief:a") == [3, 4]
    assert await offsets(rooms_store, "brief:a", after=None) == [3, 4]
    assert await offsets(rooms_store, "other") == [1, 2, 3, 4]


async def test_an_expired_message_hides_the_older_ones(rooms_store: HistoryStore) -> None:
    await rooms_store.append(records("brief:a", range(1, 3)))
    await rooms_store.append(records("brief:a", range(3, 4), ts=now_ms() - 120_000))
    await rooms_store.append(records("brief:a", range(4, 6)))
    assert await offsets(rooms_store, "brief:a") == [4, 5]
    assert await offsets(rooms_store, "brief:a", after=None) == [4, 5]
    page = await rooms_store.read("brief:a", after=0, before=None, limit=1)
    assert page.entries == [(4, b'{"n":4}')]


async def test_sqlite_shows_a_rooms_new_window_at_once(tmp_path: Path) -> None:
    """A namespace's size or TTL changed between two runs: reads follow the new one."""
    path = tmp_path / "h.sqlite3"
    first = SqliteStore(path, size=10, ttl=0)
    await first.open()
    await first.append(records("a", range(1, 7), ts=now_ms() - 120_000))
    await first.append(records("a", range(7, 11)))
    await first.close()
    second = SqliteStore(path, size=3, ttl=0)
    await second.open()
    assert await offsets(second, "a") == [8, 9, 10]
    await second.close()
    third = SqliteStore(path, size=10, ttl=60)
    await third.open()
    assert await offsets(third, "a") == [7, 8, 9, 10]
    await third.close()


def stored(path: Path) -> dict[str, list[int]]:
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT room, offset FROM messages ORDER BY room, offset").fetchall()
    kept: dict[str, list[int]] = {}
    for room, offset in rows:
        kept.setdefault(room, []).append(offset)
    return kept


async def test_sqlite_deletes_what_expired_by_each_rooms_ttl(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite, "PURGE_EVERY", 0.0)  # every commit deletes what expired
    path = tmp_path / "h.sqlite3"
    store = SqliteStore(path, size=1, ttl=0, limits=by_namespace)
    await store.open()
    for room in ("brief:a", "other"):
        await store.append(records(room, range(1, 3), ts=now_ms() - 120_000))
    await store.append(records("small:a", range(1, 5)))
    assert stored(path) == {"other": [1, 2], "small:a": [2, 3, 4]}
    await store.close()


async def test_sqlite_opens_a_file_of_the_previous_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages stored before rooms had TTLs of their own get their expiry on open."""
    monkeypatch.setattr(sqlite, "PURGE_EVERY", 0.0)
    path = tmp_path / "h.sqlite3"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(OLD_SCHEMA)
        old, new = now_ms() - 120_000, now_ms()
        db.executemany(
            "INSERT INTO messages VALUES (?, ?, ?, ?)",
            [("brief:a", 1, old, b"1"), ("brief:a", 2, new, b"2"), ("other", 1, old, b"1")],
        )
        db.executemany("INSERT INTO streams VALUES (?, ?)", [("brief:a", 2), ("other", 1)])
        db.execute("INSERT INTO meta VALUES ('epoch', 'e0')")
        db.commit()
    store = SqliteStore(path, size=1, ttl=0, limits=by_namespace)
    await store.open()
    assert store.epoch == "e0"
    assert await offsets(store, "brief:a") == [2]
    assert stored(path) == {"brief:a": [1, 2], "other": [1]}
    await store.append(records("other", range(2, 3)))  # deletes what expired
    assert stored(path) == {"brief:a": [2], "other": [1, 2]}
    await store.close()
    with closing(sqlite3.connect(path)) as db:
        indexes = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert "messages_expires" in indexes and "messages_ts" not in indexes


OLD_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE streams (room TEXT PRIMARY KEY, top INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE messages (
    room TEXT NOT NULL, offset INTEGER NOT NULL, ts INTEGER NOT NULL, payload BLOB NOT NULL,
    PRIMARY KEY (room, offset)
) WITHOUT ROWID;
CREATE INDEX messages_ts ON messages (ts);
"""

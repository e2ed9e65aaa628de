"""Both history stores against the same expectations; SQLite also across reopen."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

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

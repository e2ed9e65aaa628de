"""The single-node broker: group commit, order, delivery after commit, failures."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from roomcast.brokers.base import Draft, Page, Publication
from roomcast.brokers.memory import MemoryBroker
from roomcast.exceptions import BrokerError
from roomcast.history.base import Record
from roomcast.history.memory import MemoryStore


class CountingStore(MemoryStore):
    """A memory store that counts commits and can be told to fail them."""

    def __init__(self) -> None:
        super().__init__(size=100, ttl=0)
        self.commits: list[int] = []
        self.fail = False

    async def append(self, records: list[Record]) -> None:
        await asyncio.sleep(0)  # a commit takes time: publishes meanwhile batch up
        if self.fail:
            raise BrokerError("disk full")
        self.commits.append(len(records))
        await super().append(records)


def draft(room: str, n: int) -> Draft:
    return Draft(room, msgspec.Raw(str(n).encode()), None, 1)


async def test_publishes_in_one_tick_share_one_commit() -> None:
    store = CountingStore()
    batches: list[list[Publication]] = []
    broker = MemoryBroker(store)
    await broker.connect(batches.append)
    futures = [broker.publish(draft("a" if n % 2 else "b", n)) for n in range(10)]
    results = await asyncio.gather(*futures)
    assert store.commits == [10]
    assert [(p.room, p.offset) for p in results] == [
        ("a" if n % 2 else "b", n // 2 + 1) for n in range(10)
    ]
    assert batches == [results]  # delivered as one batch, in publish order
    more = await asyncio.gather(*(broker.publish(draft("a", n)) for n in range(3)))
    assert [p.offset for p in more] == [6, 7, 8]
    assert store.commits == [10, 3]
    await broker.close()


async def test_a_failed_commit_fails_its_publishes_and_reuses_no_offset() -> None:
    store = CountingStore()
    delivered: list[Publication] = []
    broker = MemoryBroker(store)
    await broker.connect(delivered.extend)
    assert (await broker.publish(draft("a", 1))).offset == 1
    store.fail = True
    with pytest.raises(BrokerError, match="disk full"):
        await broker.publish(draft("a", 2))
    store.fail = False
    assert (await broker.publish(draft("a", 3))).offset == 2
    assert [p.offset for p in delivered] == [1, 2]
    page: Page = await broker.read("a", after=0, limit=10)
    assert [o for o, _ in page.entries] == [1, 2]
    await broker.close()


async def test_close_stores_what_is_pending() -> None:
    store = CountingStore()
    broker = MemoryBroker(store)
    await broker.connect(lambda _: None)
    futures = [broker.publish(draft("a", n)) for n in range(5)]
    await broker.close()
    assert all(f.done() and f.result().offset == n + 1 for n, f in enumerate(futures))
    with pytest.raises(BrokerError):
        await broker.publish(draft("a", 9))

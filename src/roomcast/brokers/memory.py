"""The single-node broker: offsets assigned in process, history in a local store.

Publishes are group-committed: every draft published while the previous commit runs
(or within one loop tick) goes into the next commit, one transaction for all of them.
Publications are delivered, and their futures resolved, only after that commit.
"""

from __future__ import annotations

import asyncio
import logging

from roomcast.brokers.base import Broker, Deliver, Draft, GroupCommit, Page, Pending, Publication
from roomcast.exceptions import BrokerError
from roomcast.history.base import HistoryStore, Record
from roomcast.logs import event
from roomcast.protocol import encode_message

log = logging.getLogger("roomcast.broker")


class MemoryBroker(Broker):
    def __init__(self, store: HistoryStore) -> None:
        self.store = store
        self._deliver: Deliver | None = None
        self._tops: dict[str, int] = {}
        self._commits = GroupCommit(self._commit)

    async def connect(self, deliver: Deliver) -> None:
        self._deliver = deliver
        await self.store.open()

    async def flush(self) -> None:
        await self._commits.flush()

    async def close(self) -> None:
        self._commits.closed = True
        await self.flush()
        await self.store.close()

    async def subscribe(self, room: str) -> None:
        return None  # one node: every publication is delivered locally anyway

    async def unsubscribe(self, room: str) -> None:
        return None

    def publish(self, draft: Draft) -> asyncio.Future[Publication]:
        return self._commits.submit(draft)

    async def read(
        self, room: str, *, after: int | None = None, before: int | None = None, limit: int
    ) -> Page:
        return await self.store.read(room, after=after, before=before, limit=limit)

    async def _commit(self, batch: list[Pending]) -> None:
        try:
            records = await self._assign(batch)
            await self.store.append(records)
        except Exception as exc:
            log.error("history commit of %d messages failed: %s", len(batch), exc,
                      extra=event("commit_failed", reason=str(exc), messages=len(batch)))
            self._tops.clear()  # reload from the store: nothing of this batch was kept
            error = exc if isinstance(exc, BrokerError) else BrokerError(str(exc))
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        epoch = self.store.epoch_of()
        publications = [Publication(r.room, epoch, r.offset, r.payload) for r in records]
        if self._deliver is not None:
            self._deliver(publications)
        for publication, (_, future) in zip(publications, batch, strict=True):
            if not future.done():
                future.set_result(publication)

    async def _assign(self, batch: list[Pending]) -> list[Record]:
        for room in {draft.room for draft, _ in batch} - self._tops.keys():
            self._tops[room] = (await self.store.position(room)).offset
        epoch = self.store.epoch_of()
        records = []
        for draft, _ in batch:
            offset = self._tops[draft.room] + 1
            self._tops[draft.room] = offset
            payload = encode_message(draft.room, epoch, offset, draft.data, draft.sender, draft.ts)
            records.append(Record(draft.room, offset, draft.ts, payload))
        return records

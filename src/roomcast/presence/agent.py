"""The node's presence agent: announces joins and leaves, keeps its members alive in the
presence store, and announces the members of dead nodes as they expire.

Announcements go through one queue, in order, so a quick join-then-leave is never
stored or announced the other way round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from roomcast.exceptions import BrokerError
from roomcast.presence.base import PresenceStore
from roomcast.protocol import Joined, Left, Member, encode

if TYPE_CHECKING:
    from roomcast.brokers.base import Broker
    from roomcast.hub import Hub

log = logging.getLogger("roomcast.presence")

Announcement = tuple[bool, str, Member]  # (joined?, room, member)


class PresenceAgent:
    def __init__(self, store: PresenceStore, broker: Broker, hub: Hub) -> None:
        self.store = store
        self.broker = broker
        self.hub = hub
        self._queue: asyncio.Queue[Announcement] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.store.open()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._announce()))
        if self.store.interval > 0:
            self._tasks.append(loop.create_task(self._keep_alive()))

    async def settled(self) -> None:
        """Wait until every join and leave so far is stored and announced."""
        await self._queue.join()

    async def stop(self) -> None:
        """Send what is queued, then stop."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.settled(), 5)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        await self.store.close()

    def joined(self, room: str, member: Member) -> None:
        self._queue.put_nowait((True, room, member))

    def left(self, room: str, member: Member) -> None:
        self._queue.put_nowait((False, room, member))

    async def members(self, room: str) -> list[Member]:
        return await self.store.members(room)

    async def _announce(self) -> None:
        while True:
            joined, room, member = await self._queue.get()
            try:
                if joined:
                    await self.store.add(room, member)
                    await self.broker.broadcast(room, encode(Joined(room, member)), member.session)
                else:
                    await self.store.remove(room, member)
                    await self.broker.broadcast(room, encode(Left(room, member)), member.session)
            except BrokerError as exc:
                log.warning("presence of %s in %s not announced: %s", member.session, room, exc)
            finally:
                self._queue.task_done()

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.store.interval)
            local = {
                room.name: [session.member for session in room.members]
                for room in self.hub
                if room.members
            }
            try:
                await self.store.refresh(local)
                gone = await self.store.expire(list(local))
            except BrokerError as exc:
                log.warning("presence refresh failed: %s", exc)
                continue
            alive = {member.session for members in local.values() for member in members}
            for room, members in gone.items():
                for member in members:
                    with contextlib.suppress(BrokerError):
                        if member.session in alive:  # ours, and alive: a refresh came late
                            await self.store.add(room, member)
                        else:  # left a node that died: tell everyone
                            await self.broker.broadcast(room, encode(Left(room, member)), "")

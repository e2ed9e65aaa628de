"""The node's presence agent: announces joins and leaves, keeps its members alive in the
presence store, and announces the members of dead nodes as they expire.

Announcements go through one queue, in order, so a quick join-then-leave is never
stored or announced the other way round.

Long-poll members are in no room between two polls: each poll ``touch``-es them with a
deadline that outlasts the next poll, and they are announced as gone when it passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Literal

from roomcast.exceptions import BrokerError
from roomcast.presence.base import PresenceStore
from roomcast.protocol import Joined, Left, Member, encode

if TYPE_CHECKING:
    from roomcast.brokers.base import Broker
    from roomcast.hub import Hub

log = logging.getLogger("roomcast.presence")

Change = Literal["join", "touch", "leave"]
Announcement = tuple[Change, str, Member, float | None]  # (change, room, member, ttl)


class PresenceAgent:
    def __init__(self, store: PresenceStore, broker: Broker, hub: Hub) -> None:
        self.store = store
        self.broker = broker
        self.hub = hub
        self._queue: asyncio.Queue[Announcement] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._touched: dict[str, float] = {}  # room -> when a poll last touched a member

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
        self._queue.put_nowait(("join", room, member, None))

    def left(self, room: str, member: Member) -> None:
        self._queue.put_nowait(("leave", room, member, None))

    def touch(self, room: str, member: Member, ttl: float) -> None:
        """A long-poll member is alive for ``ttl`` more seconds (announced if new)."""
        self._touched[room] = time.monotonic() + ttl
        self._queue.put_nowait(("touch", room, member, ttl))

    async def members(self, room: str) -> list[Member]:
        return await self.store.members(room)

    async def _announce(self) -> None:
        while True:
            change, room, member, ttl = await self._queue.get()
            try:
                if change == "leave":
                    if await self.store.remove(room, member):
                        await self.broker.broadcast(
                            room, encode(Left(room, member)), member.session
                        )
                elif await self.store.add(room, member, ttl) or change == "join":
                    await self.broker.broadcast(room, encode(Joined(room, member)), member.session)
            except BrokerError as exc:
                log.warning("presence of %s in %s not announced: %s", member.session, room, exc)
            finally:
                self._queue.task_done()

    def _swept_rooms(self, local: dict[str, list[Member]]) -> list[str]:
        """Rooms with members here, and rooms touched by a poll not long ago."""
        now = time.monotonic()
        horizon = 2 * self.store.interval
        for room, deadline in list(self._touched.items()):
            if deadline + horizon < now:
                del self._touched[room]
        return list(local.keys() | self._touched.keys())

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(self.store.interval)
            hub = self.hub
            local = {room.name: members for room in hub if (members := hub.members(room.name))}
            try:
                await self.store.refresh(local)
                gone = await self.store.expire(self._swept_rooms(local))
            except BrokerError as exc:
                log.warning("presence refresh failed: %s", exc)
                continue
            alive = {member.session for members in local.values() for member in members}
            for room, members in gone.items():
                for member in members:
                    with contextlib.suppress(BrokerError):
                        if member.session in alive:  # ours, and alive: a refresh came late
                            await self.store.add(room, member)
                        else:  # left a node that died, or stopped polling: tell everyone
                            await self.broker.broadcast(room, encode(Left(room, member)), "")

"""Pub/sub over a Redis Cluster: one link per master.

A room's channel is a shard channel (``SSUBSCRIBE``/``SPUBLISH``) in the room's hash
slot, so it lives on the master that stores the room. The broker keeps one pub/sub
connection (a :class:`Link`) to each master and subscribes each room on the link of
the master owning its slot. Each link is on its own: it pings when quiet, is given up
when silent (a stalled master), reconnects with jittered backoff and then catches its
rooms up from history, like the standalone broker's single link. A dead master stops
only its own rooms; the others go on.

After a link fails, and when a master says a room's slot left it (an unsolicited
``sunsubscribe``), the cluster's slot map is read again: rooms whose slot moved (a
replica promoted after its master died, a resharding) go to the link of their new
master, which reconnects, resubscribes and catches them up from history.

redis-py's ``ClusterPubSub`` is not used: its reads poll one node after the other (a
message waits while another node's read times out), and a node link that drops is
reconnected and resubscribed inside a read, so the messages published meanwhile would
be skipped without the broker knowing it must catch up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import TYPE_CHECKING, Any

from redis import asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError

from roomcast.brokers.redis import (
    MAX_BATCH,
    PUBSUB_DEAD,
    PUBSUB_PING,
    RECONNECT_BASE,
    RECONNECT_CAP,
)
from roomcast.exceptions import BrokerError
from roomcast.logs import event

if TYPE_CHECKING:
    from roomcast.brokers.redis import RedisBroker
    from roomcast.brokers.redis_client import ClusterURL

log = logging.getLogger("roomcast.broker.redis")

ERRORS = (RedisError, RedisClusterException, OSError, BrokerError)


class ShardLinks:
    """The cluster broker's pub/sub: a link per master, rooms placed by hash slot."""

    def __init__(self, broker: RedisBroker, client: RedisCluster, url: ClusterURL) -> None:
        self.broker = broker
        self.client = client
        self.options = url.node_options()
        self.links: dict[str, Link] = {}  # node name -> its link
        self.home: dict[str, Link] = {}  # subscribed room -> the link it is subscribed on
        self._known = False  # whether the slot map was read once
        self._lock = asyncio.Lock()

    async def run(self) -> None:
        """The broker's listener task: read the slot map (retrying until a node of the
        cluster answers), start the links, and stop them when cancelled."""
        attempt = 0
        try:
            while True:
                try:
                    await self.refresh()
                    break
                except ERRORS as exc:
                    if attempt == 0:
                        log.warning("redis cluster %s unreachable: %s; retrying", self.name,
                                    exc, extra=event("broker_down", reason=str(exc)))  # fmt: skip
                    attempt += 1
                    await asyncio.sleep(backoff(attempt))
            await asyncio.Event().wait()  # the links run in their own tasks
        finally:
            links, self.links = list(self.links.values()), {}
            for link in links:
                link.retire()
            for link in links:
                with contextlib.suppress(BaseException):
                    await link.task

    @property
    def name(self) -> str:
        return ",".join(f"{node.host}:{node.port}" for node in self.client.startup_nodes)

    def changed(self) -> None:
        """Available while any link is up: a dead master takes only its own rooms."""
        self.broker._set_available(any(link.up for link in self.links.values()))

    # -- rooms ---------------------------------------------------------------------------

    def owner(self, room: str) -> ClusterNode | None:
        if not self._known:
            return None
        channel = self.broker._channel(room).encode()
        try:
            return self.client.nodes_manager.get_node_from_slot(key_slot(channel))
        except (RedisClusterException, KeyError):
            return None  # not served at the moment: the room stays where it is

    def place(self, room: str) -> Link | None:
        """Put ``room`` on the link of the master owning its slot (None: unknown yet).
        A room that moves makes its new link reconnect, so that it is caught up."""
        node = self.owner(room)
        current = self.home.get(room)
        if node is None or (current is not None and current.name == node.name):
            return current
        link = self.links.get(node.name)
        if link is None:
            link = self.links[node.name] = Link(self, node)
        if current is not None:
            current.rooms.discard(room)
            current.forget(room)
            link.stale = True  # live messages of the room may have been lost meanwhile
        link.rooms.add(room)
        self.home[room] = link
        return link

    async def subscribe(self, room: str) -> None:
        link = self.place(room)
        if link is not None and link.pubsub is not None:
            await link.pubsub.ssubscribe(self.broker._channel(room))

    async def unsubscribe(self, room: str) -> None:
        link = self.home.pop(room, None)
        if link is None:
            return
        link.rooms.discard(room)
        pubsub = link.pubsub
        if pubsub is not None:  # sent before any later subscribe of the room is
            with contextlib.suppress(*ERRORS):
                await pubsub.sunsubscribe(self.broker._channel(room))

    async def refresh(self) -> None:
        """Read the slot map again; start links to new masters, move the rooms whose
        slot moved, retire links to nodes that no longer own anything."""
        async with self._lock:
            if self._known:
                await self.client.nodes_manager.initialize()
            else:
                await self.client.initialize()
                self._known = True
            primaries = {node.name: node for node in self.client.get_primaries()}
            for name, node in primaries.items():
                if name not in self.links:
                    self.links[name] = Link(self, node)
            for room in list(self.broker._rooms):
                self.place(room)
            for name, link in list(self.links.items()):
                if name not in primaries and not link.rooms:
                    del self.links[name]
                    link.retire()
        self.changed()


class Link:
    """Pub/sub to one master: its rooms' shard channels, pinged when quiet, reconnected
    and caught up from history after any failure."""

    def __init__(self, shards: ShardLinks, node: ClusterNode) -> None:
        self.shards = shards
        self.name = node.name
        self.rooms: set[str] = set()
        self.pubsub: PubSub | None = None
        self.up = False
        self.stale = False  # rooms moved here: reconnect to catch them up
        self.retired = False
        self._client = aioredis.Redis(host=node.host, port=int(node.port), **shards.options)
        self.task = asyncio.get_running_loop().create_task(self.run())

    def retire(self) -> None:
        self.retired = True
        if self.task is not asyncio.current_task():
            self.task.cancel()

    def forget(self, room: str) -> None:
        """Unsubscribe ``room`` here, which it left for another link (best effort: a dead
        link has nothing to undo; a late answer is ignored, the room being elsewhere)."""
        pubsub = self.pubsub
        if pubsub is not None:
            channel = self.shards.broker._channel(room)
            task = asyncio.get_running_loop().create_task(_sunsubscribe(pubsub, channel))
            task.add_done_callback(_ignore)

    async def run(self) -> None:
        broker = self.shards.broker
        attempt = 0
        try:
            while not self.retired:
                try:
                    await self._open()
                    broker.reconnects += attempt > 0
                    attempt = 0
                    await broker._catch_up(sorted(self.rooms))
                    await self._read()
                except asyncio.CancelledError:
                    raise
                except ERRORS as exc:
                    if self.up or attempt == 0:
                        log.warning("redis %s unreachable: %s; retrying", self.name, exc,
                                    extra=event("broker_down", reason=str(exc)))  # fmt: skip
                    await self._drop()
                    attempt += 1
                    await asyncio.sleep(backoff(attempt))
                    with contextlib.suppress(*ERRORS):  # a replica may have taken over
                        await self.shards.refresh()
        finally:
            await self._drop()
            with contextlib.suppress(Exception):
                await self._client.aclose()

    async def _open(self) -> None:
        self.stale = False
        # A master that was restarted answers before it has rejoined the cluster; reading
        # (the catch-up) would meet CLUSTERDOWN, on which redis-py drops every connection.
        info: Any = await self._client.cluster("INFO")
        if info.get("cluster_state") != "ok":
            raise BrokerError(f"{self.name} is not in the cluster yet")
        pubsub = self._client.pubsub()
        try:
            await pubsub.ping()  # connects; its answer comes first: the master is alive
            async with asyncio.timeout(PUBSUB_DEAD):
                while (await pubsub.get_message(timeout=PUBSUB_PING)) is None:
                    pass
        except BaseException:
            await _close(pubsub)
            raise
        # From here on, a room that is subscribed meanwhile is subscribed on it directly.
        self.pubsub = pubsub
        for room in list(self.rooms):
            await pubsub.ssubscribe(self.shards.broker._channel(room))
        self.up = True
        self.shards.changed()
        log.info("redis %s connected", self.name, extra=event("broker_up"))

    async def _read(self) -> None:
        """Deliver what the link receives in batches; ping a quiet link, give up a
        silent one, reconnect if a room's slot left this master or rooms moved here."""
        pubsub = self.pubsub
        assert pubsub is not None
        broker = self.shards.broker
        heard = time.monotonic()
        while not self.retired:
            message = await pubsub.get_message(timeout=PUBSUB_PING)
            now = time.monotonic()
            if self.stale:
                raise BrokerError("rooms moved to this master: catching them up")
            if message is None:
                if now - heard > PUBSUB_DEAD:
                    raise RedisConnectionError(f"no answer from redis for {PUBSUB_DEAD}s")
                await asyncio.wait_for(pubsub.ping(), PUBSUB_DEAD)
                continue
            heard = now
            batch: list[Any] = []
            while message is not None:
                if message["type"] == "sunsubscribe":
                    self._check_moved(message)
                else:
                    broker._take(message, batch)
                if len(batch) >= MAX_BATCH:
                    break
                message = await pubsub.get_message(timeout=0)
            if batch and broker._deliver is not None:
                broker._deliver(batch)

    def _check_moved(self, message: Any) -> None:
        room = self.shards.broker._room_of(message["channel"])
        if room in self.rooms:  # not ours: the master unsubscribed us, the slot moved
            raise BrokerError(f"the slot of room {room!r} left {self.name}")

    async def _drop(self) -> None:
        pubsub, self.pubsub = self.pubsub, None
        if self.up:
            self.up = False
            self.shards.changed()
        if pubsub is not None:
            await _close(pubsub)


def backoff(attempt: int) -> float:
    delay = min(RECONNECT_CAP, RECONNECT_BASE * 2**attempt)
    return random.uniform(delay / 2, delay)


async def _sunsubscribe(pubsub: PubSub, channel: str) -> None:
    await pubsub.sunsubscribe(channel)


async def _close(pubsub: Any) -> None:
    with contextlib.suppress(Exception):
        await pubsub.aclose()


def _ignore(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()

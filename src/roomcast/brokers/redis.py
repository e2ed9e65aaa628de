"""The Redis broker: many nodes, one cluster.

Per room, in keys sharing the hash tag ``{room}`` (so Redis Cluster keeps them on one
shard):

- ``<prefix>:{room}:meta``: a hash with the room's ``epoch`` and ``top`` (newest offset);
- ``<prefix>:{room}:log``: a stream of the retained messages, entry id ``<offset>-1``,
  at most the room's history size (``XADD MAXLEN``), expiring its history TTL after the
  room's last publish;
- ``<prefix>:{room}:ch``: the pub/sub channel (sharded pub/sub with ``sharded=True``),
  carrying ``<offset>\n<epoch>\n<message>`` for messages and ``e\n<session>\n<event>``
  for events (``joined``/``left``, not stored).

Publishing is one Lua script: ``HINCRBY top`` + ``XADD`` + ``PUBLISH`` run atomically, so
offsets are gapless and strictly increasing across every node, and a message is on the
channel only once it is stored. The publishes of one loop tick go to Redis in one
pipeline. Publications reach the node only through pub/sub (the publisher's own node
included), so each room's messages arrive in offset order; after a pub/sub reconnect the
broker reads every subscribed room's history from the last offset it delivered, so a
gap in pub/sub is filled before anything newer is delivered.

With a ``redis+cluster://`` URL the broker talks to a Redis Cluster: sharded pub/sub is
always used (``SPUBLISH`` runs on the master owning the room's slot), each master's
publishes go in a pipeline of their own, so a dead master fails only its own rooms'
publishes, and pub/sub is a link per master (:mod:`roomcast.brokers.redis_shards`).
Scripts run with ``EVAL`` there: a restarted master has lost its script cache, and
loading a script into every master would fail while one of them is down.

Each room keeps its namespace's history size and TTL (``limits``): the publish script
gets them with each message, and a read shows only the room's newest ``size`` offsets,
none stamped more than ``ttl`` seconds ago (:mod:`roomcast.history.limits`).

No publish is ever retried automatically (:mod:`roomcast.brokers.redis_client`): one
whose reply was lost may have been stored, and running it again would store it twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec
from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from roomcast.brokers.base import (
    Broker,
    Deliver,
    Draft,
    GroupCommit,
    Page,
    Pending,
    Position,
    Publication,
)
from roomcast.brokers.redis_client import (
    REDIS_ERRORS,
    Client,
    ClusterURL,
    by_shard,
    connect,
    gate_for,
    is_cluster,
)
from roomcast.exceptions import BrokerError
from roomcast.history.base import now_ms
from roomcast.history.limits import Limits, fixed, oldest_ms, visible
from roomcast.logs import event, redact_url

if TYPE_CHECKING:
    from roomcast.brokers.redis_shards import ShardLinks

log = logging.getLogger("roomcast.broker.redis")

PUBLISH_SCRIPT = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local offset = redis.call('HINCRBY', KEYS[1], 'top', 1)
local payload = ARGV[2] .. epoch .. '","offset":' .. offset .. ARGV[3]
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[4], offset .. '-1', 'p', payload, 't', ARGV[5])
if tonumber(ARGV[6]) > 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
else
  redis.call('PERSIST', KEYS[2])
end
redis.call(ARGV[7], KEYS[3], offset .. '\\n' .. epoch .. '\\n' .. payload)
return {offset, epoch}
"""

POSITION_SCRIPT = """
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'top')
return {meta[1], meta[2] or '0'}
"""

PUBSUB_PING = 1.0  # seconds of a quiet pub/sub link before it is pinged
PUBSUB_DEAD = 3.0  # seconds without anything from Redis before the link is given up
RECONNECT_BASE = 0.1
MAX_BATCH = 512  # publications delivered at once from pub/sub
RECONNECT_CAP = 5.0
_json = msgspec.json.Encoder()


def message_parts(draft: Draft) -> tuple[bytes, bytes]:
    """The ``message`` event around its epoch and offset, which only Redis knows."""
    head = b'{"type":"message","room":"' + draft.room.encode() + b'","epoch":"'
    tail = (
        b',"data":' + bytes(draft.data) + b',"from":' + _json.encode(draft.sender)
        + b',"ts":' + str(draft.ts).encode() + b"}"
    )  # fmt: skip
    return head, tail


class RedisBroker(Broker):
    def __init__(
        self,
        url: str,
        *,
        history_size: int = 1000,
        history_ttl: float = 0.0,
        limits: Limits | None = None,
        sharded: bool = False,
        prefix: str = "roomcast",
    ) -> None:
        self.url = url
        # Each room's history size and TTL (the same for all without ``limits``).
        self.limits = limits or fixed(history_size, history_ttl)
        self.cluster = is_cluster(url)
        self.sharded = sharded or self.cluster  # a cluster routes SPUBLISH by hash slot
        self.prefix = prefix
        self.available = False
        self._redis: Client = connect(url)
        self._gate = gate_for(self._redis)  # a cluster client's pools do not wait
        self._publish_script = self._redis.register_script(PUBLISH_SCRIPT)
        self._position_script = self._redis.register_script(POSITION_SCRIPT)
        self._deliver: Deliver | None = None
        self._rooms: dict[str, int] = {}  # subscribed room -> newest offset delivered
        self._epochs: dict[str, str] = {}
        self._pubsub: Any = None
        self._listener: asyncio.Task[None] | None = None
        self._commits = GroupCommit(self._commit)
        self._closed = False
        self._connected = asyncio.Event()
        self._shards: ShardLinks | None = None
        if isinstance(self._redis, RedisCluster):
            from roomcast.brokers.redis_shards import ShardLinks

            self._shards = ShardLinks(self, self._redis, ClusterURL.parse(url))

    # -- keys ----------------------------------------------------------------------------

    def _key(self, room: str, kind: str) -> str:
        return f"{self.prefix}:{{{room}}}:{kind}"

    def _channel(self, room: str) -> str:
        return self._key(room, "ch")

    def _room_of(self, channel: bytes) -> str:
        text = channel.decode()
        return text[text.index("{") + 1 : text.rindex("}")]

    # -- life cycle ----------------------------------------------------------------------

    async def connect(self, deliver: Deliver) -> None:
        """Start; does not wait for Redis: the node retries until it answers."""
        self._deliver = deliver
        listen = self._listen() if self._shards is None else self._shards.run()
        self._listener = asyncio.get_running_loop().create_task(listen)

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def flush(self) -> None:
        await self._commits.flush()

    async def ping(self) -> None:
        try:
            async with self._gate:
                await self._redis.ping()
        except REDIS_ERRORS as exc:
            raise BrokerError(f"no answer: {exc}") from exc

    async def broadcast(self, room: str, payload: bytes, exclude: str) -> None:
        command = self._redis.spublish if self.sharded else self._redis.publish
        try:
            async with self._gate:
                await command(self._channel(room), b"e\n" + exclude.encode() + b"\n" + payload)
        except REDIS_ERRORS as exc:
            raise BrokerError(f"event not sent: {exc}") from exc

    async def close(self) -> None:
        self._closed = True
        self._commits.closed = True
        await self.flush()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await self._listener
        await self._drop_pubsub()
        await self._redis.aclose()

    # -- subscriptions -------------------------------------------------------------------

    async def subscribe(self, room: str) -> None:
        """Subscribe, then note the room's position: a reconnect catches up from there."""
        self._rooms.setdefault(room, -1)
        pubsub = self._pubsub
        try:
            if self._shards is not None:
                await self._shards.subscribe(room)
            elif pubsub is not None:
                await self._sub(pubsub, [room])
        except REDIS_ERRORS as exc:
            raise BrokerError(f"cannot subscribe: {exc}") from exc
        position = (await self.read(room, limit=0)).position
        if self._rooms.get(room) == -1:
            self._rooms[room] = position.offset
            self._epochs[room] = position.epoch

    async def unsubscribe(self, room: str) -> None:
        self._rooms.pop(room, None)
        if self._shards is not None:
            await self._shards.unsubscribe(room)
        pubsub = self._pubsub
        if pubsub is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                if self.sharded:
                    await pubsub.sunsubscribe(self._channel(room))
                else:
                    await pubsub.unsubscribe(self._channel(room))

    async def _sub(self, pubsub: Any, rooms: Iterable[str]) -> None:
        channels = [self._channel(room) for room in rooms]
        if not channels:
            return
        if self.sharded:
            await pubsub.ssubscribe(*channels)
        else:
            await pubsub.subscribe(*channels)

    # -- the pub/sub listener ------------------------------------------------------------

    async def _listen(self) -> None:
        attempt = 0
        while not self._closed:
            try:
                await self._open_pubsub()
                self.reconnects += attempt > 0
                attempt = 0
                await self._catch_up(list(self._rooms))
                await self._read_pubsub()
            except asyncio.CancelledError:
                raise
            except (*REDIS_ERRORS, BrokerError) as exc:
                if self.available or attempt == 0:
                    log.warning("redis %s unreachable: %s; retrying", redact_url(self.url), exc,
                                extra=event("broker_down", reason=str(exc)))  # fmt: skip
                self._set_available(False)
                await self._drop_pubsub()
                attempt += 1
                delay = min(RECONNECT_CAP, RECONNECT_BASE * 2**attempt)
                await asyncio.sleep(random.uniform(delay / 2, delay))

    async def _open_pubsub(self) -> None:
        await self._redis.ping()
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        # A channel of our own keeps the connection subscribed even with no room.
        await pubsub.subscribe(f"{self.prefix}:node:{secrets.token_hex(6)}")
        await self._sub(pubsub, list(self._rooms))
        self._pubsub = pubsub
        self._set_available(True)
        log.info("redis %s connected", redact_url(self.url), extra=event("broker_up"))

    async def _read_pubsub(self) -> None:
        """Read pub/sub until the link fails. Every message already received is delivered
        in one batch (so each member gets them in one write, as after a local commit); a
        link that says nothing is pinged, and one that stays silent (a stalled Redis) is
        dropped and reconnected."""
        pubsub = self._pubsub
        heard = time.monotonic()
        while not self._closed:
            message = await pubsub.get_message(timeout=PUBSUB_PING)
            now = time.monotonic()
            if message is None:
                if now - heard > PUBSUB_DEAD:
                    raise RedisConnectionError(f"no answer from redis for {PUBSUB_DEAD}s")
                await asyncio.wait_for(pubsub.ping(), PUBSUB_DEAD)
                continue
            heard = now
            batch: list[Publication] = []
            while message is not None:
                self._take(message, batch)
                if len(batch) >= MAX_BATCH:
                    break
                message = await pubsub.get_message(timeout=0)
            if batch and self._deliver is not None:
                self._deliver(batch)

    def _take(self, message: Any, batch: list[Publication]) -> None:
        if message["type"] not in {"message", "smessage"}:
            return
        room = self._room_of(message["channel"])
        head, second, payload = message["data"].split(b"\n", 2)
        if head == b"e":  # an event: e, the session it is not for, the payload
            if self.on_event is not None and room in self._rooms:
                self.on_event(room, payload, second.decode())
            return
        publication = self._accept(room, second.decode(), int(head), payload)
        if publication is not None:
            batch.append(publication)

    def _accept(self, room: str, epoch: str, offset: int, payload: bytes) -> Publication | None:
        last = self._rooms.get(room)
        if last is None:
            return None  # unsubscribed meanwhile
        if self._epochs.get(room) == epoch and offset <= last:
            return None  # already delivered (catch-up overlapped the live stream)
        self._epochs[room] = epoch
        self._rooms[room] = offset
        return Publication(room, epoch, offset, payload)

    def _publish_local(self, room: str, epoch: str, offset: int, payload: bytes) -> None:
        publication = self._accept(room, epoch, offset, payload)
        if publication is not None and self._deliver is not None:
            self._deliver([publication])

    async def _catch_up(self, rooms: list[str]) -> None:
        """After a reconnect: deliver what each room got while pub/sub was down."""
        for room in rooms:
            last = self._rooms.get(room, -1)
            if last < 0:
                continue  # its subscribe is still reading the position
            page = await self.read(room, after=last, limit=self.limits(room)[0])
            for offset, payload in page.entries:
                self._publish_local(room, page.position.epoch, offset, payload)

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    def _set_available(self, value: bool) -> None:
        self.available = value
        if value:
            self._connected.set()
        else:
            self._connected.clear()

    # -- publishing ----------------------------------------------------------------------

    def publish(self, draft: Draft) -> asyncio.Future[Publication]:
        return self._commits.submit(draft)

    async def _commit(self, batch: list[Pending]) -> None:
        if self._shards is None:
            await self._commit_group(batch)
            return
        # A Redis Cluster: each master's share in a pipeline of its own, all at once, so a
        # dead or silent master fails its own rooms' publishes only. A pipeline that
        # failed is never sent again, not even in part (it may have been stored).
        groups = by_shard(self._redis, batch, lambda pending: self._key(pending[0].room, "meta"))
        await asyncio.gather(*(self._commit_group(group) for group in groups))

    async def _commit_group(self, batch: list[Pending]) -> None:
        command = "SPUBLISH" if self.sharded else "PUBLISH"
        try:
            async with self._gate, self._redis.pipeline(transaction=False) as pipe:
                for draft, _ in batch:
                    head, tail = message_parts(draft)
                    keys = [self._key(draft.room, "meta"), self._key(draft.room, "log"),
                            self._channel(draft.room)]  # fmt: skip
                    size, ttl = self.limits(draft.room)
                    args: list[Any] = [secrets.token_hex(4), head, tail, size, draft.ts,
                                       int(ttl * 1000), command]  # fmt: skip
                    if isinstance(pipe, ClusterPipeline):
                        pipe.execute_command("EVAL", PUBLISH_SCRIPT, len(keys), *keys, *args)
                    else:
                        await self._publish_script(keys=keys, args=args, client=pipe)
                results = await pipe.execute(raise_on_error=False)
        except REDIS_ERRORS as exc:
            _fail(batch, BrokerError(f"not stored: {exc}"))
            return
        for (draft, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(BrokerError(f"not stored: {result}"))
                continue
            offset, epoch = int(result[0]), result[1].decode()
            head, tail = message_parts(draft)
            payload = head + epoch.encode() + b'","offset":' + str(offset).encode() + tail
            future.set_result(Publication(draft.room, epoch, offset, payload))

    # -- history -------------------------------------------------------------------------

    async def read(
        self, room: str, *, after: int | None = None, before: int | None = None, limit: int
    ) -> Page:
        try:
            async with self._gate:
                return await self._read(room, after, before, limit)
        except REDIS_ERRORS as exc:
            raise BrokerError(f"history unavailable: {exc}") from exc

    async def _read(self, room: str, after: int | None, before: int | None, limit: int) -> Page:
        meta, token = self._key(room, "meta"), secrets.token_hex(4)
        if self.cluster:
            raw: Any = await self._redis.execute_command("EVAL", POSITION_SCRIPT, 1, meta, token)
        else:
            raw = await self._position_script(keys=[meta], args=[token])
        epoch_raw, top_raw = raw
        position = Position(epoch_raw.decode(), int(top_raw))
        if limit <= 0:
            return Page(position, [])
        size, ttl = self.limits(room)
        floor = position.offset - size  # older offsets are beyond the room's size
        log_key = self._key(room, "log")
        rows: Any
        if after is not None:
            start = f"({max(after, floor)}-1" if max(after, floor) > 0 else "-"
            rows = await self._redis.xrange(log_key, start, "+", count=limit)
        else:
            end = f"({before}-1" if before is not None else "+"
            lowest = f"({floor}-1" if floor > 0 else "-"
            newest: Any = await self._redis.xrevrange(log_key, end, lowest, count=limit)
            rows = list(reversed(newest))
        stored = ((int(entry_id.split(b"-")[0]), int(fields[b"t"]), fields[b"p"])
                  for entry_id, fields in rows)  # fmt: skip
        return Page(position, visible(stored, oldest_ms(ttl, now_ms())))


def _fail(batch: list[Pending], error: BrokerError) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)

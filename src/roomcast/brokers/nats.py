"""The NATS broker: many nodes share one NATS (JetStream) for offsets, history, fan-out.

Subjects, stream, epoch and reading by offset are in :mod:`roomcast.brokers.jetstream`.

Offsets: the broker knows per room the newest (offset, stream sequence) it has seen, and
publishes offset + 1 with ``Nats-Expected-Last-Subject-Sequence`` = that sequence. The
server stores the message only if nothing was stored on the room's subject since, so
assigning the offset and storing it is one atomic step in the broker; a node that lost
the race reads the subject's last message (or has seen it arrive) and tries again. A
room's drafts are stored one after the other, in the order of the calls (the next needs
the previous one's sequence); drafts of different rooms are in flight together.

Offsets never restart while the stream lives: the stream has no ``max_age`` (it would
also remove a quiet room's last message, the room's offset counter); the history TTL
is applied when reading, as in the SQLite store.

History size and TTL per room (``limits``, from the room's namespace): the stream's
``max_msgs_per_subject`` is one number for every room, the largest size of all (so it
bounds what NATS stores); a read shows only the room's own newest ``size`` offsets and,
of those, the messages stamped within its TTL, as on every other backend.

Delivery: each subscribed room is a core subscription on the subject the stream
republishes stored messages to (a subscription on the stored subject would also get
the publishes JetStream rejected). The broker delivers each room's publications in
offset order, without duplicates: the stream may republish two publishers' messages the
other way round, so one that comes early waits for those before it, and a gap they do
not fill within ``GAP_WAIT`` (messages missed while disconnected) is read from history;
after a reconnect, every subscribed room is caught up from history at once. The
publisher delivers its own message right after the ack (when it is next), all of one
loop tick in one batch, and resolves the publish futures after that. Events
(``joined``, ``left``) are core messages on the same live subjects: only subscribed
nodes get them.

Connection: nats-py reconnects for ever and restores the subscriptions; the broker starts
even without NATS and is ``available`` while connected with the stream ready. Meanwhile
publishes, reads and subscribes fail at once with :class:`BrokerError`, and so does every
request in flight when the connection drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from typing import TYPE_CHECKING, NamedTuple
from urllib.parse import parse_qsl, urlsplit

import msgspec
from nats.errors import Error as NatsError

from roomcast.brokers.base import Broker, Deliver, Draft, Page, Position, Publication
from roomcast.brokers.jetstream import (
    WRONG_LAST_SEQUENCE,
    Head,
    NoStream,
    RoomStream,
    decode_meta,
    room_of_token,
    room_token,
)
from roomcast.exceptions import BrokerError, ConfigError
from roomcast.history.base import now_ms
from roomcast.history.limits import Limits, fixed, largest_size, of_settings, oldest_ms
from roomcast.protocol import encode_message

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.aio.subscription import Subscription

    from roomcast.config import Settings

__all__ = ["NatsBroker", "parse_url", "room_of_token", "room_token"]

log = logging.getLogger("roomcast.broker")

MAX_CACHED_ROOMS = 10_000
GAP_WAIT = 0.1  # seconds a gap may wait for its messages to come live before a read
EVENT = "Roomcast-Event"  # header of events (joined, left): "<exclude>\n<event>"
_NAME = re.compile(r"[A-Za-z0-9_-]+")


class NatsUrl(NamedTuple):
    """What a ``--broker nats://host:4222[,host2:4222][?stream=S&prefix=P&replicas=N]``
    URL says; the broker and the presence store read it the same way."""

    servers: list[str] | str  # nats:// or tls://, credentials kept
    prefix: str
    stream: str
    replicas: int


def parse_url(url: str) -> NatsUrl:
    parts = urlsplit(url)
    servers = [f"{parts.scheme}://{netloc}" for netloc in parts.netloc.split(",") if netloc]
    options = dict(parse_qsl(parts.query))
    try:
        replicas = int(options.get("replicas", "1"))
    except ValueError:
        raise ConfigError(f"bad replicas in {url!r}") from None
    return NatsUrl(
        servers or "nats://127.0.0.1:4222",
        options.get("prefix", "roomcast"),
        options.get("stream", "ROOMCAST"),
        replicas,
    )


class _Room:
    """A room this node publishes to: its drafts waiting, their writer, its head."""

    __slots__ = ("head", "name", "queue", "subject", "task")

    def __init__(self, name: str, subject: str) -> None:
        self.name = name
        self.subject = subject
        self.queue: deque[tuple[Draft, asyncio.Future[Publication]]] = deque()
        self.task: asyncio.Task[None] | None = None
        self.head: Head | None = None


class _Sub:
    """A subscribed room: the newest publication delivered, those that came early (after
    a gap), and the task filling the gap from history."""

    __slots__ = ("behind", "epoch", "filling", "offset", "pending", "sub")

    def __init__(self) -> None:
        self.sub: Subscription | None = None
        self.epoch = ""
        self.offset = 0
        self.pending: dict[int, Publication] = {}
        self.filling: asyncio.Task[None] | None = None
        self.behind = False  # reconnected: what was stored meanwhile is to be read


class NatsBroker(Broker):
    def __init__(
        self,
        servers: str | list[str] = "nats://127.0.0.1:4222",
        *,
        size: int = 1000,
        ttl: float = 0.0,
        limits: Limits | None = None,
        prefix: str = "roomcast",
        stream: str = "ROOMCAST",
        replicas: int = 1,
        timeout: float = 5.0,
        reconnect_wait: float = 1.0,
        name: str = "roomcast",
    ) -> None:
        if not all(_NAME.fullmatch(part) for part in prefix.split(".")):
            raise ConfigError(f"bad NATS subject prefix {prefix!r}")
        if not _NAME.fullmatch(stream):
            raise ConfigError(f"bad JetStream stream name {stream!r}")
        # Each room's history size and TTL (``size`` and ``ttl`` for all without it);
        # ``size`` is the stream's bound per room, at least every room's size.
        self.limits = limits or fixed(size, ttl)
        self.timeout = timeout
        self.js = RoomStream(
            servers,
            size=size,
            prefix=prefix,
            stream=stream,
            replicas=replicas,
            timeout=timeout,
            reconnect_wait=reconnect_wait,
            name=name,
            on_new_epoch=self._forget_heads,
            on_available=self._set_available,
        )
        self.available = False
        self._deliver: Deliver | None = None
        self._rooms: dict[str, _Room] = {}
        self._subs: dict[str, _Sub] = {}
        self._outbox: list[Publication] = []
        self._acks: list[tuple[asyncio.Future[Publication], Publication]] = []
        self._flushing = False
        self._closed = False

    @classmethod
    def from_settings(cls, settings: Settings) -> NatsBroker:
        """``--broker nats://host:4222[,host2:4222][?stream=S&prefix=P&replicas=N]``."""
        url = parse_url(settings.broker)
        return cls(
            url.servers,
            size=largest_size(settings),
            limits=of_settings(settings),
            prefix=url.prefix,
            stream=url.stream,
            replicas=url.replicas,
            name=f"roomcast {settings.node_id}",
        )

    @property
    def epoch(self) -> str:
        return self.js.epoch

    @property
    def online(self) -> asyncio.Event:
        """Set while connected to NATS."""
        return self.js.online

    @property
    def offline(self) -> asyncio.Event:
        """Set while the connection is lost (nats-py reconnects)."""
        return self.js.offline

    def _forget_heads(self) -> None:
        for room in self._rooms.values():
            room.head = None

    def _set_available(self, value: bool) -> None:
        self.available = value
        self.reconnects = self.js.nc.stats["reconnects"] if self.js.nc is not None else 0
        if value:  # back after a disconnect: deliver what was stored meanwhile
            for room, state in self._subs.items():
                if state.epoch:
                    state.behind = True
                    self._fill_later(room, state, 0.0)

    async def connect(self, deliver: Deliver) -> None:
        """Start; if NATS does not answer at once, go on connecting in the background
        (``available`` is False meanwhile: publishes and reads fail at once)."""
        self._deliver = deliver
        await self.js.open()

    async def wait_connected(self, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.js.online.wait(), timeout)
        return self.available

    async def ping(self) -> None:
        try:
            await self.js.connected().flush(timeout=max(1, round(self.timeout)))
        except NatsError as exc:
            raise BrokerError(f"no answer: {exc!r}") from exc

    async def flush(self) -> None:
        tasks = [room.task for room in self._rooms.values() if room.task is not None]
        await asyncio.gather(*map(asyncio.shield, tasks), return_exceptions=True)
        self._flush()  # resolve the futures of what was just stored

    async def close(self) -> None:
        self._closed = True
        await self.flush()  # store what is pending
        self._deliver = None
        for name in list(self._subs):
            await self.unsubscribe(name)
        await self.js.close()

    # -- publishing -------------------------------------------------------------------

    def publish(self, draft: Draft) -> asyncio.Future[Publication]:
        future: asyncio.Future[Publication] = asyncio.get_running_loop().create_future()
        try:
            if self._closed:
                raise BrokerError("the broker is closed")
            self.js.ready()  # fail fast while disconnected
        except BrokerError as exc:
            future.set_exception(exc)
            return future
        room = self._rooms.get(draft.room)
        if room is None:
            room = self._rooms[draft.room] = _Room(draft.room, self.js.subject(draft.room))
        room.queue.append((draft, future))
        if room.task is None:
            room.task = asyncio.get_running_loop().create_task(self._write(room))
        return future

    async def _write(self, room: _Room) -> None:
        """Store a room's drafts one after the other, in the order of the calls."""
        try:
            while room.queue:
                draft, future = room.queue.popleft()
                if future.done():
                    continue
                try:
                    publication = await self._store(room, draft)
                except Exception as exc:
                    error = exc if isinstance(exc, BrokerError) else BrokerError(repr(exc))
                    if not future.done():
                        future.set_exception(error)
                    continue
                self._offer(publication, future)
        finally:
            room.task = None
            if len(self._rooms) > MAX_CACHED_ROOMS and self._rooms.get(room.name) is room:
                del self._rooms[room.name]

    async def _store(self, room: _Room, draft: Draft) -> Publication:
        """Give ``draft`` the room's next offset and store it, in one conditional publish."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        recreated = False
        while True:
            try:
                head = room.head
                if head is None:
                    head = room.head = await self.js.last(room.subject) or Head(0, 0)
                offset, epoch = head.offset + 1, self.js.epoch
                payload = encode_message(
                    draft.room, epoch, offset, draft.data, draft.sender, draft.ts
                )
                ack = await self.js.publish(room.subject, payload, head.seq)
            except NoStream:
                if recreated:
                    raise
                recreated = True
                await self.js.ensure()  # deleted: a new stream, a new epoch
                continue
            if ack.error is None:
                if room.head is None or room.head.seq < ack.seq:
                    room.head = Head(offset, ack.seq)
                return Publication(draft.room, epoch, offset, payload)
            if room.head is head:
                room.head = None  # another node stored a message first: read it
            if ack.error.err_code != WRONG_LAST_SEQUENCE:
                raise BrokerError(f"NATS refused the message: {ack.error.description}")
            if loop.time() > deadline:
                raise BrokerError(f"room {draft.room!r}: too many concurrent publishers")

    # -- delivery ---------------------------------------------------------------------

    async def subscribe(self, room: str) -> None:
        if room in self._subs:
            return
        nc = self.js.ready()
        state = self._subs[room] = _Sub()

        async def on_message(msg: Msg) -> None:
            self._on_live(room, msg)

        try:
            state.sub = await nc.subscribe(self.js.subject(room, "live"), cb=on_message)
            # Sent after the SUB on the same connection: what is stored after this
            # read reaches the subscription.
            head = await self.js.last(self.js.subject(room))
        except BaseException:
            await self.unsubscribe(room)
            raise
        if state.epoch in {"", self.js.epoch}:
            state.epoch = self.js.epoch
            state.offset = max(state.offset, head.offset if head is not None else 0)

    async def unsubscribe(self, room: str) -> None:
        state = self._subs.pop(room, None)
        if state is not None and state.filling is not None:
            state.filling.cancel()
        if state is not None and state.sub is not None:
            with contextlib.suppress(NatsError):
                await state.sub.unsubscribe()

    async def broadcast(self, room: str, payload: bytes, exclude: str) -> None:
        """Events go to the room's live subject too: every subscribed node, this one
        included, gets them, not stored."""
        nc = self.js.ready()
        data = exclude.encode() + b"\n" + payload
        try:
            await nc.publish(self.js.subject(room, "live"), data, headers={EVENT: "1"})
        except NatsError as exc:
            raise BrokerError(f"event not sent: {exc!r}") from exc

    def _on_live(self, room: str, msg: Msg) -> None:
        if room not in self._subs:
            return
        if msg.headers and EVENT in msg.headers:
            exclude, _, payload = msg.data.partition(b"\n")
            if self.on_event is not None:
                self._flush()  # after the messages that came before it
                self.on_event(room, payload, exclude.decode())
            return
        try:
            meta = decode_meta(msg.data)
        except msgspec.DecodeError:
            log.warning("ignoring a message on %s that is not roomcast's", msg.subject)
            return
        writer = self._rooms.get(room)
        seq = int((msg.headers or {}).get("Nats-Sequence", 0))
        if meta.epoch != self.js.epoch:
            self.js.refresh()  # the stream was replaced
        elif writer is not None and (writer.head is None or writer.head.seq < seq):
            writer.head = Head(meta.offset, seq)  # saves losing a race, and a read
        self._offer(Publication(room, meta.epoch, meta.offset, msg.data))

    def _offer(self, pub: Publication, future: asyncio.Future[Publication] | None = None) -> None:
        """Deliver ``pub`` if it is the next of its room, and what came early after it;
        keep it if it is early (the stream may republish the messages of two publishers
        the other way round, or some were missed while disconnected); drop it if old.
        The publisher's own (with ``future``) as soon as it is acknowledged."""
        state = self._subs.get(pub.room)
        if state is None or self._deliver is None:
            pass
        elif not state.epoch:  # subscribing: the node reads the room's position next
            self._emit(state, pub, future)
            return
        elif pub.epoch != state.epoch:
            if future is None:  # the stream was replaced: start over from here
                state.pending.clear()
                self._emit(state, pub, None)
        elif pub.offset == state.offset + 1:
            self._emit(state, pub, future)
            self._drain(state)
            return
        elif pub.offset > state.offset + 1:
            state.pending.setdefault(pub.offset, pub)
            self._fill_later(pub.room, state, GAP_WAIT)
        if future is not None and not future.done():
            future.set_result(pub)

    def _emit(
        self, state: _Sub, pub: Publication, future: asyncio.Future[Publication] | None
    ) -> None:
        state.epoch, state.offset = pub.epoch, pub.offset
        self._outbox.append(pub)
        if future is not None:
            self._acks.append((future, pub))
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _drain(self, state: _Sub) -> None:
        """Deliver the early ones that are next now; forget those already passed."""
        while (pub := state.pending.pop(state.offset + 1, None)) is not None:
            self._emit(state, pub, None)
        for offset in [offset for offset in state.pending if offset <= state.offset]:
            del state.pending[offset]

    def _fill_later(self, room: str, state: _Sub, wait: float) -> None:
        if state.filling is None:
            state.filling = asyncio.get_running_loop().create_task(self._fill(room, state, wait))

    async def _fill(self, room: str, state: _Sub, wait: float) -> None:
        """Unless the live stream fills it within ``wait``, read a gap from history (and
        once ``behind``, all that is newer); what history no longer has is skipped (the
        node sees the jump)."""
        try:
            await asyncio.sleep(wait)
            failures = 0
            while self._subs.get(room) is state and (state.pending or state.behind):
                end = min(state.pending, default=0)  # the first offset after the gap
                if not end:
                    state.behind = False
                limit = end - state.offset - 1 if end else self.limits(room)[0]
                try:
                    page = await self.read(room, after=state.offset, limit=limit)
                except BrokerError as exc:
                    if not self.available:
                        return  # the reconnect fills it
                    failures += 1
                    if failures < 3:
                        await asyncio.sleep(GAP_WAIT)
                        continue
                    log.warning("room %s: gap after %d not filled: %s", room, state.offset, exc)
                    page = Page(Position("", 0), [])
                if self._subs.get(room) is not state:
                    return
                for offset, payload in page.entries:
                    if page.position.epoch == state.epoch and offset > state.offset:
                        self._emit(state, Publication(room, state.epoch, offset, payload), None)
                if end and state.offset + 1 < end:
                    state.offset = end - 1
                self._drain(state)
        finally:
            state.filling = None

    def _flush(self) -> None:
        """Deliver what this loop tick queued as one batch, then resolve its futures."""
        self._flushing = False
        batch, self._outbox = self._outbox, []
        acks, self._acks = self._acks, []
        batch = [pub for pub in batch if pub.room in self._subs]
        if batch and self._deliver is not None:
            try:
                self._deliver(batch)
            except Exception:
                log.exception("delivering %d publications failed", len(batch))
        for future, pub in acks:
            if not future.done():
                future.set_result(pub)

    # -- reading ----------------------------------------------------------------------

    async def read(
        self, room: str, *, after: int | None = None, before: int | None = None, limit: int
    ) -> Page:
        self.js.ready()
        subject = self.js.subject(room)
        try:
            head = await self.js.last(subject)
        except NoStream:  # gone (then a new, empty one is made), or JetStream was not ready
            await self.js.ensure()
            head = await self.js.last(subject)  # else a room with history would read empty
        position = Position(self.js.epoch, head.offset if head is not None else 0)
        if head is None or limit <= 0:
            return Page(position, [])
        size, ttl = self.limits(room)
        if after is not None:
            first, last = after + 1, head.offset
        else:
            last = head.offset if before is None else min(head.offset, before - 1)
            first = last - limit + 1
        first = max(first, head.offset - size + 1, 1)  # the room's newest `size` only
        if first > last:
            return Page(position, [])
        start = await self.js.seek(subject, first, head)
        oldest = oldest_ms(ttl, now_ms())
        return Page(position, await self.js.scan(subject, start, last, limit, oldest))

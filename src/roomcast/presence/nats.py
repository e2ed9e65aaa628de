"""Cluster-wide presence in NATS JetStream, next to the NATS broker's stream of rooms.

A stream of its own (``<stream>_PRESENCE``, subjects ``<prefix>.presence.>``, file
storage) keeps one message per member of a room: the subject is
``<prefix>.presence.<room token>.<session token>`` (tokens as in
:func:`roomcast.brokers.jetstream.room_token`), ``max_msgs_per_subject`` is 1, and the
message is the member with its deadline (Unix ms). A node rewrites its members' messages
every third of the TTL, which pushes the deadlines forward and replaces the old ones.

Expiry: a node reads a room's messages and deletes each expired one by its stream
sequence (``STREAM.MSG.DELETE``). The delete succeeds only while that very message is
the stored one: of several nodes sweeping the same room, exactly one deletes it (the
others get "no message found"), and a refresh that came first replaced it, so nobody
does. Only the winner returns the member, so exactly one ``left`` is announced.

After the connection to NATS is (re)established, the node rewrites its own members at
once and expires nobody for one TTL: while NATS was away no node could refresh, and the
members of live nodes must not be announced as gone. Entries nobody rewrote for an hour
(``max_age``) are dropped without a word: no node had members in their room to sweep it.

The store has a connection of its own to the broker's servers (same URL: ``nats://`` or
``tls://``, credentials), retried for ever; while it is down, calls fail at once with
:class:`BrokerError`, and so do those waiting for an answer when it drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import msgspec
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError

from roomcast.brokers.jetstream import (
    EXPECTED_LAST_SUBJECT_SEQUENCE,
    NO_MESSAGE_FOUND,
    STREAM_NAME_IN_USE,
    STREAM_NOT_FOUND,
    WRONG_LAST_SEQUENCE,
    PubAck,
    Reply,
    redact_servers,
    room_token,
)
from roomcast.brokers.nats import parse_url
from roomcast.exceptions import BrokerError
from roomcast.history.base import now_ms
from roomcast.presence.base import PresenceStore
from roomcast.protocol import Member

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from roomcast.config import Settings

log = logging.getLogger("roomcast.presence")

MESSAGE_DELETE_FAILED = 10057  # "no message found": deleted or replaced meanwhile
WRITES_AT_ONCE = 256
PULL_BATCH = 256
PULL_EXPIRES = 500_000_000  # ns
MAX_AGE = 3600.0  # seconds an entry is kept without a rewrite (or 100 TTLs if longer)


class Entry(msgspec.Struct):
    member: Member
    deadline: int  # Unix ms


class _Consumer(Reply):
    name: str = ""
    num_pending: int = 0


class _Purged(Reply):
    purged: int = 0


class _Stored(msgspec.Struct):
    seq: int


class _Last(Reply):
    message: _Stored | None = None


class _StreamConfig(msgspec.Struct):
    subjects: list[str] = msgspec.field(default_factory=list)
    max_msgs_per_subject: int = -1


class _StreamInfo(Reply):
    config: _StreamConfig | None = None


R = TypeVar("R", bound=Reply)
T = TypeVar("T")
_encode = msgspec.json.Encoder().encode
_decode_entry = msgspec.json.Decoder(Entry).decode


class NoStream(BrokerError):
    """The presence stream is gone (or JetStream did not answer): make it, try again."""


class NatsPresence(PresenceStore):
    def __init__(
        self,
        servers: str | list[str] = "nats://127.0.0.1:4222",
        *,
        ttl: float = 30.0,
        prefix: str = "roomcast",
        stream: str = "ROOMCAST_PRESENCE",
        replicas: int = 1,
        timeout: float = 5.0,
        reconnect_wait: float = 0.5,
        name: str = "roomcast presence",
    ) -> None:
        self.servers, self.ttl, self.interval = servers, ttl, ttl / 3
        self.prefix, self.stream, self.replicas = prefix, stream, replicas
        self.timeout, self.reconnect_wait, self.name = timeout, reconnect_wait, name
        self.ready = asyncio.Event()  # connected, this node's members written
        self.offline = asyncio.Event()  # the connection is lost (nats-py reconnects)
        self._nc: Client | None = None
        self._made = False  # the stream was made or found once
        self._since = 0  # Unix ms of the last (re)connection
        self._own: dict[str, dict[str, Member]] = {}  # room -> session -> this node's
        self._lock = asyncio.Lock()  # writes of this node's members, one call at a time
        self._scans: set[asyncio.Queue[Msg | None]] = set()
        self._waiting: set[asyncio.Future[None]] = set()  # set when the connection drops
        self._tried = asyncio.Event()  # the first attempt to connect is over
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> NatsPresence:
        url = parse_url(settings.broker)
        return cls(
            url.servers,
            ttl=settings.presence_ttl,
            prefix=url.prefix,
            stream=url.stream + "_PRESENCE",
            replicas=url.replicas,
            name=f"roomcast {settings.node_id} presence",
        )

    def _subject(self, room: str, session: str = "*") -> str:
        token = session if session == "*" else room_token(session)
        return f"{self.prefix}.presence.{room_token(room)}.{token}"

    # -- the connection ---------------------------------------------------------------

    async def open(self) -> None:
        """Connect in the background; return once connected or failed a first time."""
        self._nc = Client()
        self._spawn(self._start(self._nc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._tried.wait(), self.timeout)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.close()
        self.ready.clear()

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start(self, nc: Client) -> None:
        try:
            await nc.connect(  # retries every reconnect_wait until a server answers
                self.servers,
                name=self.name,
                connect_timeout=max(1, round(self.timeout)),
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=self.reconnect_wait,  # type: ignore[arg-type]  # seconds
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                error_cb=self._on_error,
            )
            delay = self.reconnect_wait
            while True:
                try:
                    await self._ensure()
                    break
                except BrokerError as exc:
                    log.warning("presence stream %s not ready: %s; retrying", self.stream, exc)
                    self._tried.set()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            self._made = True
            await self._back()
        except Exception:
            log.exception("connecting the presence store to NATS failed")
        finally:
            self._tried.set()

    async def _on_disconnected(self) -> None:
        self.ready.clear()
        self.offline.set()
        for queue in self._scans:
            queue.put_nowait(None)
        for lost in self._waiting:
            if not lost.done():
                lost.set_result(None)

    async def _on_reconnected(self) -> None:
        if self._made:  # else the start makes the stream first
            self._spawn(self._back())

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS (presence): %r", exc)
        if not self._tried.is_set():
            log.warning("NATS at %s unreachable (%r); retrying", redact_servers(self.servers), exc)
            self._tried.set()

    async def _back(self) -> None:
        """(Re)connected: expire nobody for a TTL, write this node's members at once."""
        self._since = now_ms()
        self.offline.clear()
        try:
            await self.refresh({room: list(own.values()) for room, own in self._own.items()})
        except BrokerError as exc:
            log.warning("rewriting presence after a reconnect failed: %s", exc)
        if self._nc is not None and self._nc.is_connected:
            self.ready.set()

    def _connected(self) -> Client:
        nc = self._nc
        if nc is None or nc.is_closed:
            raise BrokerError("the presence store is closed")
        if not nc.is_connected:
            raise BrokerError("presence: not connected to NATS")
        return nc

    def _usable(self) -> None:
        self._connected()
        if not self._made:
            raise BrokerError(f"presence: the NATS stream {self.stream} is not ready")

    # -- requests ---------------------------------------------------------------------

    async def _request(self, subject: str, payload: bytes, kind: type[R], **headers: str) -> R:
        """A request that fails at once if the connection drops while it waits."""
        nc = self._connected()
        lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.add(lost)
        call = asyncio.ensure_future(
            nc.request(subject, payload, timeout=self.timeout, headers=headers or None)
        )
        try:
            await asyncio.wait((call, lost), return_when=asyncio.FIRST_COMPLETED)
            if not call.done():
                raise BrokerError("presence: lost the connection to NATS")
            reply = msgspec.json.decode(call.result().data, type=kind)
        except NoRespondersError:
            raise NoStream(f"nobody stores {subject}") from None
        except (NatsError, TimeoutError) as exc:
            raise BrokerError(f"presence: NATS: {exc!r}") from exc
        except msgspec.DecodeError as exc:
            raise BrokerError(f"presence: bad reply on {subject}: {exc}") from exc
        finally:
            self._waiting.discard(lost)
            call.cancel()
        if reply.error is not None and reply.error.err_code == STREAM_NOT_FOUND:
            raise NoStream(f"stream {self.stream} not found")
        return reply

    async def _api(self, path: str, body: object, kind: type[R]) -> R:
        payload = b"" if body is None else msgspec.json.encode(body)
        return await self._request(f"$JS.API.{path}", payload, kind)

    async def _ensure(self) -> None:
        """Create the stream, or check that the one there is like it."""
        subjects = f"{self.prefix}.presence.>"
        config = {
            "name": self.stream, "subjects": [subjects], "retention": "limits",
            "storage": "file", "discard": "old", "num_replicas": self.replicas,
            "max_msgs": -1, "max_bytes": -1, "max_msgs_per_subject": 1,
            "max_age": int(max(MAX_AGE, 100 * self.ttl) * 1e9),
            "description": "roomcast presence: a subject per member of a room",
        }  # fmt: skip
        created = await self._api(f"STREAM.CREATE.{self.stream}", config, _StreamInfo)
        if created.error is None:
            return
        if created.error.err_code != STREAM_NAME_IN_USE:
            raise BrokerError(f"stream {self.stream}: {created.error.description}")
        info = await self._api(f"STREAM.INFO.{self.stream}", None, _StreamInfo)
        found = info.config or _StreamConfig()
        if subjects not in found.subjects or found.max_msgs_per_subject != 1:
            raise BrokerError(f"stream {self.stream} exists with another configuration")

    async def _stored(self, operation: Callable[[], Awaitable[T]]) -> T:
        """``operation()``; if the stream is gone, make it again and retry once."""
        self._usable()
        try:
            return await operation()
        except NoStream:
            await self._ensure()
            return await operation()

    # -- writing ----------------------------------------------------------------------

    def _deadline(self, ttl: float | None = None) -> int:
        return now_ms() + int((self.ttl if ttl is None else ttl) * 1000)

    async def _put(self, room: str, member: Member, deadline: int, expected: int | None) -> int:
        """Store the member's entry (if the subject's last sequence is ``expected``);
        return the new sequence, or 0 if the subject's last sequence was not that."""
        headers = {} if expected is None else {EXPECTED_LAST_SUBJECT_SEQUENCE: str(expected)}
        payload = _encode(Entry(member, deadline))
        ack = await self._request(self._subject(room, member.session), payload, PubAck, **headers)
        if ack.error is None:
            return ack.seq
        if ack.error.err_code == WRONG_LAST_SEQUENCE and expected is not None:
            return 0
        raise BrokerError(f"presence: NATS refused the entry: {ack.error.description}")

    async def _last(self, subject: str) -> int:
        """The stream sequence of the subject's entry; 0 if there is none."""
        body = {"last_by_subj": subject}
        reply = await self._api(f"STREAM.MSG.GET.{self.stream}", body, _Last)
        if reply.error is not None and reply.error.err_code != NO_MESSAGE_FOUND:
            raise BrokerError(f"presence: reading {subject}: {reply.error.description}")
        return reply.message.seq if reply.message is not None else 0

    async def _upsert(self, room: str, member: Member, deadline: int) -> bool:
        """Store the entry; True if there was none (created with expected sequence 0)."""
        expected = 0
        for _ in range(5):
            if await self._put(room, member, deadline, expected):
                return expected == 0
            expected = await self._last(self._subject(room, member.session))
        raise BrokerError(f"presence of {member.session} in {room!r}: too many writers")

    async def add(self, room: str, member: Member, ttl: float | None = None) -> bool:
        """``ttl`` None: a member of this node, rewritten by ``refresh`` until removed;
        else (a long-poll member) stored until the ``ttl`` ends."""
        async with self._lock:
            if ttl is None:  # refreshed (after a reconnect too) while this node has it
                self._own.setdefault(room, {})[member.session] = member
            deadline = self._deadline(ttl)
            return await self._stored(lambda: self._upsert(room, member, deadline))

    async def remove(self, room: str, member: Member) -> bool:
        async with self._lock:
            own = self._own.get(room)
            if own is not None and own.pop(member.session, None) is not None and not own:
                del self._own[room]
            body = {"filter": self._subject(room, member.session)}
            path = f"STREAM.PURGE.{self.stream}"
            reply = await self._stored(lambda: self._api(path, body, _Purged))
        if reply.error is not None:
            raise BrokerError(f"presence: removing {member.session}: {reply.error.description}")
        return reply.purged > 0

    async def refresh(self, rooms: dict[str, list[Member]]) -> None:
        """Rewrite this node's members of ``rooms`` (those added and not removed since)
        with a new deadline, replacing their entries."""
        deadline = self._deadline()
        async with self._lock:
            writes = [
                (room, member)
                for room, members in rooms.items()
                if (own := self._own.get(room))
                for member in members
                if member.session in own
            ]
            for start in range(0, len(writes), WRITES_AT_ONCE):
                chunk = writes[start : start + WRITES_AT_ONCE]
                puts = (partial(self._put, room, m, deadline, None) for room, m in chunk)
                results = await asyncio.gather(*map(self._stored, puts), return_exceptions=True)
                for result in results:
                    if isinstance(result, BaseException):
                        raise result

    # -- reading and expiring ---------------------------------------------------------

    async def members(self, room: str) -> list[Member]:
        entries = await self._stored(partial(self._entries, room))
        now = now_ms()
        return [entry.member for _, entry in entries if entry.deadline > now]

    async def expire(self, rooms: list[str]) -> dict[str, list[Member]]:
        """Delete the expired entries of ``rooms``, each by its sequence; return the
        members whose deletion succeeded here. Nothing for a TTL after a reconnect."""
        self._usable()
        now = now_ms()
        if now - self._since < self.ttl * 1000:
            return {}
        gone: dict[str, list[Member]] = {}
        for room in rooms:
            try:
                entries = await self._stored(partial(self._entries, room))
            except BrokerError as exc:
                if not gone:
                    raise
                log.warning("presence sweep stopped at room %s: %s", room, exc)
                break
            expired = [(seq, entry.member) for seq, entry in entries if entry.deadline <= now]
            won = await asyncio.gather(*(self._delete(seq) for seq, _ in expired))
            if members := [member for (_, member), ok in zip(expired, won, strict=True) if ok]:
                gone[room] = members
        return gone

    async def _delete(self, seq: int) -> bool:
        """Delete the entry at ``seq``: True if this call did, False if it was gone or
        replaced already (or the answer was lost: then nobody announces it)."""
        body = {"seq": seq, "no_erase": True}
        try:
            reply = await self._api(f"STREAM.MSG.DELETE.{self.stream}", body, Reply)
        except BrokerError as exc:
            log.warning("presence: deleting the expired entry %d: %s", seq, exc)
            return False
        if reply.error is None:
            return True
        if reply.error.err_code != MESSAGE_DELETE_FAILED:
            log.warning("presence: deleting the expired entry %d: %s", seq,
                        reply.error.description)  # fmt: skip
        return False

    async def _entries(self, room: str) -> list[tuple[int, Entry]]:
        """The room's entries with their stream sequences, from a short-lived consumer."""
        nc = self._connected()
        config = {
            "deliver_policy": "all", "filter_subject": self._subject(room),
            "ack_policy": "none", "mem_storage": True, "num_replicas": 1,
            "inactive_threshold": 60_000_000_000,
        }  # fmt: skip
        body = {"stream_name": self.stream, "config": config}
        consumer = await self._api(f"CONSUMER.CREATE.{self.stream}", body, _Consumer)
        if consumer.error is not None:
            raise BrokerError(f"presence: reading {room!r}: {consumer.error.description}")
        queue: asyncio.Queue[Msg | None] = asyncio.Queue()
        self._scans.add(queue)
        try:
            if consumer.num_pending == 0:  # an empty room: a pull would wait its expiry
                return []
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox, cb=queue.put)
            try:
                return await self._pull(nc, consumer.name, inbox, queue)
            finally:
                with contextlib.suppress(NatsError):
                    await sub.unsubscribe()
        except NatsError as exc:
            raise BrokerError(f"presence: NATS: {exc!r}") from exc
        finally:
            self._scans.discard(queue)
            with contextlib.suppress(BrokerError):  # else it goes after a minute
                await self._api(f"CONSUMER.DELETE.{self.stream}.{consumer.name}", None, Reply)

    async def _pull(
        self, nc: Client, consumer: str, inbox: str, queue: asyncio.Queue[Msg | None]
    ) -> list[tuple[int, Entry]]:
        """Pull batches until the consumer has nothing more. A pull ends with a status
        message once what there is was sent, or at its expiry: nats-server 2.9 never
        answers a ``no_wait`` pull alone if the messages it counted were deleted."""
        entries: list[tuple[int, Entry]] = []
        pull = msgspec.json.encode({"batch": PULL_BATCH, "no_wait": True, "expires": PULL_EXPIRES})
        subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{consumer}"
        while True:
            await nc.publish(subject, pull, reply=inbox)
            for _ in range(PULL_BATCH):
                try:
                    msg = await asyncio.wait_for(queue.get(), self.timeout)
                except TimeoutError:
                    raise BrokerError(f"NATS did not answer within {self.timeout:g}s") from None
                if msg is None:
                    raise BrokerError("presence: lost the connection to NATS")
                if not msg.data and msg.headers and "Status" in msg.headers:
                    return entries  # no more messages
                metadata = msg.metadata
                try:
                    entries.append((metadata.sequence.stream, _decode_entry(msg.data)))
                except msgspec.DecodeError:
                    log.warning("ignoring %s: not a presence entry", msg.subject)
                if metadata.num_pending == 0:
                    return entries

"""The NATS side of the NATS broker: one connection and one JetStream stream of rooms.

The stream (``ROOMCAST`` by default) has one subject per room, ``<prefix>.room.<token>``,
the token being the room name with every byte outside ``A-Za-z0-9_`` written as ``-xx``
(dots, ``:`` and ``@`` never make extra tokens, and the token reads back to the name).
It keeps ``max_msgs_per_subject`` = the largest history size of any room, and
republishes every *stored* message to ``<prefix>.live.<token>`` for the nodes'
subscriptions. A stored message is a room's complete ``message`` event; its JSON
carries the epoch, offset and ts.

The epoch is the stream's: a hash of its creation time, so it changes exactly when the
stream, with all history, is lost. Requests go through one reply subscription and fail
with :class:`BrokerError` at once when the connection is (or gets) lost, never hang.
Reading by offset: a binary search over stream sequences for the first wanted offset,
then a short-lived pull consumer from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import SlowConsumerError

from roomcast.exceptions import BrokerError
from roomcast.logs import event, redact_url

if TYPE_CHECKING:
    from nats.aio.msg import Msg

log = logging.getLogger("roomcast.broker")

WRONG_LAST_SEQUENCE = 10071  # JetStream error codes
NO_MESSAGE_FOUND = 10037
STREAM_NOT_FOUND = 10059
STREAM_NAME_IN_USE = 10058
EXPECTED_LAST_SUBJECT_SEQUENCE = "Nats-Expected-Last-Subject-Sequence"
SCAN_BATCH = 256
_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_ESCAPE = re.compile(r"-([0-9a-f]{2})")


def room_token(room: str) -> str:
    """``room`` as one NATS subject token of ``A-Za-z0-9_-``, reversibly."""
    return "".join(chr(b) if b in _SAFE else f"-{b:02x}" for b in room.encode())


def room_of_token(token: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m[1], 16)), token).encode("latin-1").decode()


def epoch_of(stream: str, created: str) -> str:
    return hashlib.blake2b(f"{stream}@{created}".encode(), digest_size=4).hexdigest()


class Meta(msgspec.Struct):
    """What the broker reads from a stored ``message`` event."""

    epoch: str
    offset: int
    ts: int


decode_meta = msgspec.json.Decoder(Meta).decode


class ApiError(msgspec.Struct):
    code: int = 0
    err_code: int = 0
    description: str = ""


class Reply(msgspec.Struct):
    error: ApiError | None = None


class PubAck(Reply):
    seq: int = 0


class _Stored(msgspec.Struct):
    seq: int
    data: bytes = b""


class _MsgGet(Reply):
    message: _Stored | None = None


class _StreamInfo(Reply):
    created: str = ""
    config: dict[str, Any] = msgspec.field(default_factory=dict)


class _ConsumerInfo(Reply):
    name: str = ""


R = TypeVar("R", bound=Reply)


class NoStream(BrokerError):
    """Nobody stores this subject (the stream is gone) or JetStream does not answer."""


@dataclass(frozen=True, slots=True)
class Head:
    """A room's newest message known: its offset and its stream sequence."""

    offset: int
    seq: int


class RoomStream:
    def __init__(
        self,
        servers: str | list[str],
        *,
        size: int,
        prefix: str,
        stream: str,
        replicas: int,
        timeout: float,
        reconnect_wait: float,
        name: str,
        on_new_epoch: Callable[[], None],
        on_available: Callable[[bool], None],
    ) -> None:
        self.servers, self.size, self.prefix, self.stream = servers, size, prefix, stream
        self.replicas, self.timeout, self.reconnect_wait, self.name = (
            replicas, timeout, reconnect_wait, name,
        )  # fmt: skip
        self.on_new_epoch = on_new_epoch
        self.on_available = on_available
        self.epoch = ""
        self.available = False
        self.online = asyncio.Event()  # available: connected, the stream ready
        self.offline = asyncio.Event()  # the connection is lost (nats-py reconnects)
        self.nc: Client | None = None
        self._inbox = ""
        self._tokens = itertools.count()
        self._replies: dict[str, asyncio.Future[Msg]] = {}
        self._scans: set[asyncio.Queue[Msg | None]] = set()
        self._lock = asyncio.Lock()
        self._tried = asyncio.Event()  # the first attempt to connect is over
        self._starting: asyncio.Task[None] | None = None
        self._checking: asyncio.Task[None] | None = None

    def subject(self, room: str, kind: str = "room") -> str:
        return f"{self.prefix}.{kind}.{room_token(room)}"

    async def open(self) -> None:
        """Connect and make the stream ready, retrying in the background for ever; return
        once that is done or has failed a first time (then ``available`` is False)."""
        self.nc = Client()
        self._starting = asyncio.get_running_loop().create_task(self._start(self.nc))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._tried.wait(), self.timeout)

    async def _start(self, nc: Client) -> None:
        try:
            await nc.connect(  # retries every reconnect_wait until a server answers
                self.servers,
                name=self.name,
                connect_timeout=max(1, round(self.timeout)),
                allow_reconnect=True,
                max_reconnect_attempts=-1,
                reconnect_time_wait=self.reconnect_wait,  # type: ignore[arg-type]  # seconds
                ping_interval=10,
                max_outstanding_pings=3,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
                error_cb=self._on_error,
            )
            self._inbox = nc.new_inbox() + "."
            await nc.subscribe(self._inbox + "*", cb=self._on_reply)
            delay = self.reconnect_wait
            while True:
                try:
                    await self.ensure()
                    break
                except BrokerError as exc:
                    log.warning("NATS stream %s not ready: %s; retrying", self.stream, exc)
                    self._tried.set()
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
            self._set_available(nc.is_connected)
            log.info("connected to NATS", extra=event("broker_up"))
        except Exception:
            log.exception("connecting to NATS failed")
        finally:
            self._tried.set()

    async def close(self) -> None:
        for task in (self._starting, self._checking):
            if task is not None:
                task.cancel()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
        self._set_available(False)

    def connected(self) -> Client:
        if self.nc is None or self.nc.is_closed:
            raise BrokerError("the broker is closed")
        if not self.nc.is_connected:
            raise BrokerError("not connected to NATS")
        return self.nc

    def ready(self) -> Client:
        """The connection, if connected with the stream ready; else BrokerError."""
        nc = self.connected()
        if not self.epoch:
            raise BrokerError(f"the NATS stream {self.stream} is not ready")
        return nc

    def _set_available(self, value: bool) -> None:
        self.available = value
        if value:
            self.offline.clear()
            self.online.set()
        else:
            self.online.clear()
            self.offline.set()
        self.on_available(value)

    async def _on_disconnected(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            log.warning("lost the connection to NATS, reconnecting",
                        extra=event("broker_down", reason="connection lost"))  # fmt: skip
        self._set_available(False)
        error = BrokerError("lost the connection to NATS")
        for future in self._replies.values():
            if not future.done():
                future.set_exception(error)
        for queue in self._scans:
            queue.put_nowait(None)

    async def _on_reconnected(self) -> None:
        log.info("reconnected to NATS", extra=event("broker_up"))
        if self.epoch:  # else the start has yet to make the stream ready
            self._set_available(True)
            self.refresh()  # the stream may be new, or gone

    async def _on_error(self, exc: Exception) -> None:
        level = logging.WARNING if isinstance(exc, SlowConsumerError) else logging.DEBUG
        log.log(level, "NATS: %r", exc)
        if not self._tried.is_set():
            log.warning("NATS at %s unreachable (%r); retrying", redact_servers(self.servers),
                        exc, extra=event("broker_down", reason=repr(exc)))  # fmt: skip
            self._tried.set()

    # -- requests ---------------------------------------------------------------------

    async def request(
        self, subject: str, payload: bytes = b"", headers: dict[str, str] | None = None
    ) -> Msg:
        nc = self.connected()
        token = str(next(self._tokens))
        future: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._replies[token] = future
        try:
            await nc.publish(subject, payload, reply=self._inbox + token, headers=headers)
            msg = await asyncio.wait_for(future, self.timeout)
        except TimeoutError:
            raise BrokerError(f"NATS did not answer within {self.timeout:g}s") from None
        except NatsError as exc:
            raise BrokerError(f"NATS: {exc!r}") from exc
        finally:
            self._replies.pop(token, None)
        if msg.headers and msg.headers.get("Status") == "503":
            raise NoStream(f"no JetStream stream answered on {subject}")
        return msg

    async def _on_reply(self, msg: Msg) -> None:
        future = self._replies.get(msg.subject[len(self._inbox) :])
        if future is not None and not future.done():
            future.set_result(msg)

    async def api(self, path: str, body: object, kind: type[R]) -> R:
        payload = b"" if body is None else msgspec.json.encode(body)
        msg = await self.request(f"$JS.API.{path}", payload)
        try:
            reply = msgspec.json.decode(msg.data, type=kind)
        except msgspec.DecodeError as exc:
            raise BrokerError(f"bad JetStream reply to {path}: {exc}") from exc
        if reply.error is not None and reply.error.err_code == STREAM_NOT_FOUND:
            raise NoStream(f"stream {self.stream} not found")
        return reply

    async def publish(self, subject: str, payload: bytes, expected_seq: int) -> PubAck:
        """Store ``payload`` if the subject's last message is still ``expected_seq``."""
        headers = {EXPECTED_LAST_SUBJECT_SEQUENCE: str(expected_seq)}
        msg = await self.request(subject, payload, headers)
        return msgspec.json.decode(msg.data, type=PubAck)

    # -- the stream -------------------------------------------------------------------

    async def ensure(self) -> None:
        """Find or create the stream, bring its settings up to date, learn its epoch."""
        rooms, live = f"{self.prefix}.room.>", f"{self.prefix}.live.>"
        wanted = {"max_msgs_per_subject": self.size, "republish": {"src": rooms, "dest": live}}
        info_path = f"STREAM.INFO.{self.stream}"
        async with self._lock:
            try:
                info = await self.api(info_path, None, _StreamInfo)
            except NoStream:
                config = {
                    "name": self.stream, "subjects": [rooms], "retention": "limits",
                    "storage": "file", "discard": "old", "num_replicas": self.replicas,
                    "max_msgs": -1, "max_bytes": -1, "max_age": 0, **wanted,
                    "description": "roomcast: a subject per room, the offsets in the messages",
                }  # fmt: skip
                info = await self.api(f"STREAM.CREATE.{self.stream}", config, _StreamInfo)
                if info.error is not None and info.error.err_code == STREAM_NAME_IN_USE:
                    info = await self.api(info_path, None, _StreamInfo)  # another node's
            if info.error is None and rooms not in info.config.get("subjects", []):
                raise BrokerError(f"stream {self.stream} exists without subjects {rooms}")
            republish = info.config.get("republish") or {}
            current = (info.config.get("max_msgs_per_subject"), republish.get("src"),
                       republish.get("dest"))  # fmt: skip
            if info.error is None and current != (self.size, rooms, live):
                log.info("updating stream %s: %s", self.stream, wanted)
                config = {**info.config, **wanted}
                info = await self.api(f"STREAM.UPDATE.{self.stream}", config, _StreamInfo)
            if info.error is not None:
                raise BrokerError(f"stream {self.stream}: {info.error.description}")
            epoch = epoch_of(self.stream, info.created)
            if epoch != self.epoch:
                if self.epoch:
                    log.warning("stream %s is new: epoch %s, was %s", self.stream, epoch,
                                self.epoch)  # fmt: skip
                self.epoch = epoch
                self.on_new_epoch()

    def refresh(self) -> None:
        """Check the stream in the background (one check at a time)."""
        if self._checking is None or self._checking.done():
            self._checking = asyncio.get_running_loop().create_task(self._check())

    async def _check(self) -> None:
        try:
            await self.ensure()
        except BrokerError as exc:
            log.warning("checking stream %s failed: %s", self.stream, exc)

    # -- messages ---------------------------------------------------------------------

    async def get(self, subject: str, seq: int | None = None) -> tuple[int, Meta] | None:
        """The last message of ``subject`` or (with ``seq``) its first at ``seq`` or later."""
        body = {"last_by_subj": subject} if seq is None else {"seq": seq, "next_by_subj": subject}
        reply = await self.api(f"STREAM.MSG.GET.{self.stream}", body, _MsgGet)
        if reply.error is not None:
            if reply.error.err_code == NO_MESSAGE_FOUND:
                return None
            raise BrokerError(f"reading {subject}: {reply.error.description}")
        assert reply.message is not None
        try:
            return reply.message.seq, decode_meta(reply.message.data)
        except msgspec.DecodeError as exc:
            raise BrokerError(f"{subject} holds a message that is not roomcast's") from exc

    async def last(self, subject: str) -> Head | None:
        found = await self.get(subject)
        if found is None:
            return None
        seq, meta = found
        if meta.epoch != self.epoch:
            await self.ensure()
            if meta.epoch != self.epoch:
                log.warning("%s: the newest message has epoch %s, the stream %s", subject,
                            meta.epoch, self.epoch)  # fmt: skip
        return Head(meta.offset, seq)

    async def seek(self, subject: str, target: int, head: Head) -> int:
        """The stream sequence of the first kept message of ``subject`` with an offset
        of at least ``target``: a binary search, guessing every other step where
        ``target`` would be if the room's messages were consecutive in the stream."""
        if target >= head.offset:
            return head.seq
        best, best_offset = head.seq, head.offset
        lo, upper = 1, head.seq  # the answer is in [lo, upper), or it is `best`
        guess = True
        while lo < upper:
            mid = best - (best_offset - target) if guess else (lo + upper) // 2
            if not lo <= mid < upper:
                mid = (lo + upper) // 2
            guess = not guess
            found = await self.get(subject, mid)
            if found is None or found[0] >= upper:
                upper = mid  # no message of the room in [mid, upper)
                continue
            seq, meta = found
            if meta.offset == target:
                return seq
            if meta.offset > target:
                best, best_offset, upper = seq, meta.offset, mid
            else:  # each offset in between had a sequence of its own
                lo = seq + (target - meta.offset)
        return best

    async def scan(
        self, subject: str, start: int, last: int, limit: int, oldest: int
    ) -> list[tuple[int, bytes]]:
        """Up to ``limit`` messages of ``subject`` from sequence ``start`` on, offsets up
        to ``last``, after the newest one stamped before ``oldest`` (and after a hole in
        the offsets): consecutive offsets (:func:`roomcast.history.limits.visible`); from
        an ephemeral pull consumer."""
        config = {
            "deliver_policy": "by_start_sequence", "opt_start_seq": start,
            "filter_subject": subject, "ack_policy": "none", "mem_storage": True,
            "num_replicas": 1, "inactive_threshold": 60_000_000_000,
        }  # fmt: skip
        body = {"stream_name": self.stream, "config": config}
        consumer = await self.api(f"CONSUMER.CREATE.{self.stream}", body, _ConsumerInfo)
        if consumer.error is not None:
            raise BrokerError(f"reading {subject}: {consumer.error.description}")
        queue: asyncio.Queue[Msg | None] = asyncio.Queue()
        self._scans.add(queue)
        entries: list[tuple[int, bytes]] = []
        try:
            nc = self.connected()
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox, cb=queue.put)
            next_subject = f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{consumer.name}"
            try:
                more = True
                while more and len(entries) < limit:
                    batch = min(limit - len(entries), SCAN_BATCH)
                    pull = msgspec.json.encode({"batch": batch, "no_wait": True})
                    await nc.publish(next_subject, pull, reply=inbox)
                    more = await self._take(queue, batch, last, oldest, entries)
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        except TimeoutError:
            raise BrokerError(f"NATS did not answer within {self.timeout:g}s") from None
        except NatsError as exc:
            raise BrokerError(f"NATS: {exc!r}") from exc
        finally:
            self._scans.discard(queue)
            with contextlib.suppress(BrokerError):  # else it expires after a minute
                await self.request(f"$JS.API.CONSUMER.DELETE.{self.stream}.{consumer.name}")
        return entries

    async def _take(
        self,
        queue: asyncio.Queue[Msg | None],
        batch: int,
        last: int,
        oldest: int,
        entries: list[tuple[int, bytes]],
    ) -> bool:
        """Collect one pull's messages; False once there is nothing more to read."""
        for _ in range(batch):
            if queue.empty():
                msg = await asyncio.wait_for(queue.get(), self.timeout)
            else:
                msg = queue.get_nowait()
            if msg is None:
                raise BrokerError("lost the connection to NATS")
            if not msg.data and msg.headers and "Status" in msg.headers:
                return False  # no more messages
            try:
                meta = decode_meta(msg.data)
            except msgspec.DecodeError:
                continue
            if meta.offset > last:
                return False
            if meta.ts < oldest or (entries and meta.offset != entries[-1][0] + 1):
                entries.clear()  # what a reader sees is one run, none of it expired
            if meta.ts >= oldest:
                entries.append((meta.offset, msg.data))
            if meta.offset == last:
                return False
        return True


def redact_servers(servers: str | list[str]) -> str:
    """The NATS URLs for a log line, without their credentials."""
    return ",".join(map(redact_url, [servers] if isinstance(servers, str) else servers))

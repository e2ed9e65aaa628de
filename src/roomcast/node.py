"""The node: one server process's rooms, sessions, broker and their life cycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import TYPE_CHECKING

from msgspec import Raw

from roomcast.admin import Admin
from roomcast.auth import Authenticator, Identity
from roomcast.brokers import Broker, Draft, Publication, create_broker
from roomcast.config import Settings
from roomcast.exceptions import BrokerError, CloseCode, ErrorCode, ProtocolError
from roomcast.frame import Frame
from roomcast.history.base import now_ms
from roomcast.hub import Hub, Room
from roomcast.logs import event
from roomcast.metrics import Meter
from roomcast.presence import create_presence
from roomcast.presence.agent import PresenceAgent
from roomcast.protocol import (
    MAX_HISTORY_LIMIT,
    CommandId,
    Member,
    Ok,
    Since,
    Welcome,
    check_room,
    encode,
)
from roomcast.session import Session
from roomcast.stats import Stats
from roomcast.tokens import Signer

if TYPE_CHECKING:
    from roomcast.transports.base import Transport

log = logging.getLogger("roomcast.node")


class Node:
    """Ties the hub (local rooms), the sessions and the broker together."""

    def __init__(self, settings: Settings, broker: Broker | None = None) -> None:
        self.settings = settings
        self.broker = broker if broker is not None else create_broker(settings)
        self.meter = Meter()  # counters for GET /metrics
        self.hub = Hub(settings.max_buffer, self.meter)
        self.presence_agent = PresenceAgent(
            create_presence(settings, self.hub), self.broker, self.hub
        )
        self.broker.on_event = self.hub.tell
        self.sessions: dict[str, Session] = {}
        secret = settings.secret or secrets.token_urlsafe(32)
        self.signer = Signer(secret)
        self.auth = Authenticator(settings)
        self.state = "starting"  # starting -> ready -> draining -> stopped
        self._opening: dict[str, asyncio.Future[Room]] = {}
        self._subscriptions = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self.stats = Stats(self)  # samples for the admin page; loop lag, broker ping
        self.admin = Admin(self, secret)  # its stats publisher and commands (admin.py)

    @property
    def ready(self) -> bool:
        """Accepting connections: started, not draining, and the broker reachable."""
        return self.state == "ready" and self.broker.available

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.connect(self._deliver)
        await self.presence_agent.start()
        self._heartbeat = asyncio.get_running_loop().create_task(self._heartbeats())
        self.stats.start()
        self.state = "ready"
        self.admin.start()
        log.info("node %s ready", self.settings.node_id)

    async def drain(self) -> None:
        """Stop taking work, store what is pending, close every session with 1012 (their
        leaving is announced), then close the broker."""
        if self.state in {"draining", "stopped"}:
            return
        self.state = "draining"
        if self._heartbeat is not None:
            self._heartbeat.cancel()
        self.stats.stop()
        self.admin.stop()
        await self.broker.flush()
        for session in list(self.sessions.values()):
            self.disconnect(session, CloseCode.SERVICE_RESTART, "server shutting down")
        await asyncio.sleep(0)  # the sessions leave their rooms (scheduled by disconnect)
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await self.presence_agent.stop()
        await self.broker.close()
        self.state = "stopped"

    def _spawn(self, coro: asyncio.Future[None] | asyncio.Task[None] | object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- sessions ---------------------------------------------------------------------

    def open_session(
        self,
        transport: Transport,
        identity: Identity | str,
        *,
        session_id: str | None = None,
        announce: bool = True,
        welcome: bool = True,
        token: str | None = None,
    ) -> Session:
        """A new session on ``transport``; it is greeted with ``welcome`` (carrying the
        session token of a one-way transport) unless ``welcome`` is False."""
        session = Session(self, transport, identity, session_id=session_id, announce=announce)
        self.sessions[session.id] = session
        self.watch_expiry(session)
        if welcome:
            heartbeat = number(self.settings.heartbeat)
            session.reply(encode(Welcome(session.id, self.settings.node_id, heartbeat, token)))
        return session

    def close_session(self, session: Session) -> None:
        """Forget a session whose connection ended: it leaves all its rooms."""
        session.closed = True
        if session.expiry is not None:
            session.expiry.cancel()
        if self.sessions.get(session.id) is session:  # not a newer one with the same id
            del self.sessions[session.id]
        for name in list(session.rooms):
            room = self.hub.get(name)
            if room is not None:
                self._remove(room, session)
        session.rooms.clear()

    def disconnect(self, session: Session, code: int, reason: str) -> None:
        """Close a session's connection with ``code``; it leaves its rooms right after."""
        if session.closed:
            return
        session.closed = True
        self.meter.disconnected(code)
        session.transport.close(code, reason)
        # Not now: this may run inside a fan-out loop over a room's members.
        asyncio.get_running_loop().call_soon(self.close_session, session)

    def watch_expiry(self, session: Session) -> None:
        """Close ``session`` with 4003 once its token has expired and the grace has passed,
        unless a ``refresh`` comes first (which calls this again)."""
        if session.expiry is not None:
            session.expiry.cancel()
            session.expiry = None
        expires = session.identity.expires
        if expires and not session.closed:
            delay = max(0.0, expires + self.settings.token_grace - time.time())
            loop = asyncio.get_running_loop()
            session.expiry = loop.call_later(delay, self._expire, session)

    def _expire(self, session: Session) -> None:
        session.expiry = None
        error = ProtocolError(ErrorCode.TOKEN_EXPIRED, "the connection token expired")
        session.fail(error)
        log.info("session %s closed: token expired", session.id,
                 extra=event("token_expired", session=session.id))  # fmt: skip
        self.disconnect(session, CloseCode.TOKEN_EXPIRED, "token expired")

    def disconnect_slow(self, session: Session) -> None:
        if session.closed:
            return  # still written to until it leaves its rooms: said once is enough
        buffered = getattr(session.transport, "buffered", None)
        log.warning("session %s disconnected: slow consumer (%s bytes buffered)", session.id,
                    buffered, extra=event("slow_consumer", session=session.id, buffered=buffered))
        self.disconnect(session, CloseCode.SLOW_CONSUMER, "slow consumer")

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            for session in list(self.sessions.values()):
                if not session.transport.pongs:  # a comment to keep proxies from idling out
                    session.transport.ping()
                elif session.awaiting_pong:
                    log.info("session %s closed: heartbeat timeout", session.id,
                             extra=event("heartbeat_timeout", session=session.id))  # fmt: skip
                    self.disconnect(session, CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")
                else:
                    session.awaiting_pong = True
                    session.transport.ping()

    # -- rooms ------------------------------------------------------------------------

    async def join(
        self, session: Session, name: str, since: Since | None, command_id: CommandId = None
    ) -> Ok:
        """Make ``session`` a member of room ``name``, replaying from ``since`` first."""
        self._check_ready(command_id)
        self.auth.check_join(session.identity, name, command_id)
        room = await self._room(name)
        recovered: bool | None = None
        room.opening += 1
        try:
            if session.closed:
                raise ProtocolError(ErrorCode.UNAVAILABLE, "the session is closed", command_id)
            if name not in session.rooms:
                recovered = await self._admit(session, room, since)
        finally:
            room.opening -= 1
            if self.hub.drop_if_idle(room):
                self._spawn(self._unsubscribe(name))
        return Ok(id=command_id, room=name, epoch=room.epoch, offset=room.top, recovered=recovered)

    async def _room(self, name: str) -> Room:
        """The local room ``name``, subscribed in the broker and its position known."""
        while True:
            room = self.hub.get(name)
            if room is not None:
                return room
            pending = self._opening.get(name)
            if pending is not None:
                await asyncio.shield(pending)
                continue
            future: asyncio.Future[Room] = asyncio.get_running_loop().create_future()
            self._opening[name] = future
            try:
                room = await self._open_room(name)
                future.set_result(room)
                return room
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # retrieved: waiters re-raise their own way
                raise
            finally:
                del self._opening[name]

    async def _open_room(self, name: str) -> Room:
        try:
            async with self._subscriptions:
                await self.broker.subscribe(name)
            position = (await self.broker.read(name, limit=0)).position
        except BrokerError as exc:
            self._spawn(self._unsubscribe(name))  # runs once this opening is over
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"room unavailable: {exc}") from exc
        return self.hub.add_room(Room(name, position.epoch, position.offset))

    async def _admit(self, session: Session, room: Room, since: Since | None) -> bool | None:
        """Replay what ``session`` missed since ``since``, then add it, with no await between
        the last replayed offset and the add (so nothing falls between them)."""
        if since is None:
            self._add(room, session)
            return None
        if since.epoch != room.epoch or since.offset > room.top:
            self._add(room, session)
            return False
        after = since.offset
        while after < room.top:
            try:
                page = await self.broker.read(room.name, after=after, limit=room.top - after)
            except BrokerError as exc:  # not a loss: the client tries again
                raise ProtocolError(ErrorCode.UNAVAILABLE, f"history unavailable: {exc}") from exc
            if session.closed:
                return False
            entries = page.entries
            if room.epoch != since.epoch or not entries or entries[0][0] != after + 1:
                self._add(room, session)  # the epoch changed, or a gap: lost
                return False
            for offset, payload in entries:
                if offset > room.top:
                    break  # stored but not yet fanned out: it reaches the member live
                session.send(Frame(payload))
                after = offset
        self._add(room, session)
        return True

    def leave(self, session: Session, name: str, command_id: CommandId = None) -> None:
        room = self.hub.get(name)
        if name not in session.rooms or room is None:
            raise ProtocolError(ErrorCode.NOT_JOINED, f"not in room {name!r}", command_id)
        self._remove(room, session)

    def _add(self, room: Room, session: Session) -> None:
        if self.hub.add_member(room, session) and self._announces(session, room.name):
            self.presence_agent.joined(room.name, session.member)

    def _remove(self, room: Room, session: Session) -> None:
        name = room.name
        if self.hub.remove_member(room, session):
            self._spawn(self._unsubscribe(name))
        if self._announces(session, name):
            self.presence_agent.left(name, session.member)

    def _announces(self, session: Session, room: str) -> bool:
        """The session's joining and leaving ``room`` are presence events."""
        return session.announce and self.settings.namespace(room).presence

    def touch_presence(self, rooms: list[str], member: Member) -> None:
        """A long-poll member polled: present until after its next poll would end."""
        ttl = self.settings.poll_timeout + self.settings.presence_ttl
        for room in rooms:
            if self.settings.namespace(room).presence:
                self.presence_agent.touch(room, member, ttl)

    async def _unsubscribe(self, name: str) -> None:
        async with self._subscriptions:
            if self.hub.get(name) is None and name not in self._opening:
                await self.broker.unsubscribe(name)

    def _deliver(self, publications: list[Publication]) -> None:
        """Fan out stored messages, room by room, each room's in offset order."""
        if len(publications) == 1:
            pub = publications[0]
            self._deliver_room(pub.room, pub.epoch, [(pub.offset, pub.payload)])
            return
        rooms: dict[str, list[Publication]] = {}
        for pub in publications:
            rooms.setdefault(pub.room, []).append(pub)
        for name, pubs in rooms.items():
            self._deliver_room(name, pubs[-1].epoch, [(pub.offset, pub.payload) for pub in pubs])

    def _deliver_room(self, name: str, epoch: str, entries: list[tuple[int, bytes]]) -> None:
        room = self.hub.get(name)
        if room is None:
            return
        if room.backlog is not None:  # a gap is being filled: queue behind it
            room.backlog.extend(entries)
            return
        if epoch == room.epoch and entries[0][0] > room.top + 1:
            room.backlog = list(entries)  # a gap: fill it from history first
            self._spawn(self._fill_gap(room, epoch))
            return
        self.hub.fanout(name, epoch, entries)

    async def _fill_gap(self, room: Room, epoch: str) -> None:
        """Read the messages a broker skipped, then deliver them and what came meanwhile,
        in order. What history no longer has is skipped: members see the jump."""
        try:
            while room.backlog:
                first = min(offset for offset, _ in room.backlog)
                try:
                    page = await self.broker.read(
                        room.name, after=room.top, limit=first - room.top - 1
                    )
                    found = page.entries if page.position.epoch == epoch else []
                except BrokerError as exc:
                    log.warning("room %s: gap after %d not filled: %s", room.name, room.top, exc)
                    found = []
                merged = dict(found)
                merged.update(room.backlog)
                room.backlog = []
                self.hub.fanout(room.name, epoch, sorted(merged.items()))
        finally:
            room.backlog = None

    # -- operations shared by sessions and the HTTP API --------------------------------

    def publish(self, room: str, data: Raw, sender: Member | None) -> asyncio.Future[Publication]:
        """Store and fan out one message; the future resolves once it is stored."""
        if self.state != "ready":
            future: asyncio.Future[Publication] = asyncio.get_running_loop().create_future()
            future.set_exception(BrokerError("the server is shutting down"))
            return future
        return self.meter.track_publish(
            self.broker.publish(Draft(room, data, sender, now_ms())), api=sender is None
        )

    async def presence(self, room: str) -> list[Member]:
        """Members of ``room`` on every node (at most ``--max-presence`` of them)."""
        try:
            members = await self.presence_agent.members(check_room(room))
            return members[: self.settings.max_presence]
        except BrokerError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"presence unavailable: {exc}") from exc

    async def history(self, room: str, limit: int, before: int | None = None) -> Ok:
        check_room(room)
        try:
            page = await self.broker.read(room, before=before, limit=min(limit, MAX_HISTORY_LIMIT))
        except BrokerError as exc:
            raise ProtocolError(ErrorCode.UNAVAILABLE, f"history unavailable: {exc}") from exc
        messages = [Raw(payload) for _, payload in page.entries]
        position = page.position
        return Ok(room=room, epoch=position.epoch, offset=position.offset, messages=messages)

    def _check_ready(self, command_id: CommandId) -> None:
        if self.state != "ready":
            raise ProtocolError(ErrorCode.UNAVAILABLE, "the server is shutting down", command_id)


def number(value: float) -> float | int:
    return int(value) if value == int(value) else value

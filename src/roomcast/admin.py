"""The admin page's side of a node: its keys, its live stats, and its commands.

- **Keys.** The page logs in with ``--admin-password`` (or the ``--api-key``) and gets a
  signed cookie, then connection tokens for its WebSocket that make it an admin
  (:data:`roomcast.auth.ADMIN_KID`). Both are HS256 JWTs signed with keys derived from the
  node's ``--secret`` and the password: every node of a cluster with the same secret and
  password accepts them, and changing the password voids every cookie and token.
- **Stats.** Every :data:`PERIOD` seconds (unless it is draining) the node publishes its
  :meth:`roomcast.stats.Stats.snapshot` into :data:`roomcast.auth.ADMIN_ROOM`, through the
  broker, so a page on any node sees every node. The room keeps a few seconds of history
  (:data:`roomcast.config.RESERVED_NAMESPACE`), for a page that just joined. These
  publishes are not counted as messages published in ``/metrics``: nobody published them.
- **Commands.** Disconnecting a session that is on another node goes through the broker
  as an event (not stored) in :data:`CONTROL_ROOM`, which every node subscribes to; the
  node that has the session closes it with 4004 and answers with another event.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final

import jwt
import msgspec
from msgspec import Raw

from roomcast.auth import ADMIN_KID, ADMIN_ROOM, ADMIN_USER, RESERVED
from roomcast.brokers.base import Draft
from roomcast.exceptions import BrokerError, CloseCode
from roomcast.history.base import now_ms
from roomcast.logs import event

if TYPE_CHECKING:
    from roomcast.brokers.base import Publication
    from roomcast.node import Node

log = logging.getLogger("roomcast.admin")

PERIOD: Final = 2.0  # seconds between two stats of a node
CONTROL_ROOM: Final = RESERVED + "control"
COOKIE_TTL: Final = 3600.0  # seconds an admin login lasts (renewed while a page is open)
TOKEN_TTL: Final = 300.0  # seconds of an admin connection token (the page refreshes it)
DISCONNECT_TIMEOUT: Final = 3.0  # seconds to wait for the node that has the session
RETRY_MAX: Final = 30.0  # seconds between attempts to subscribe to the control room
REASON: Final = "disconnected by an administrator"


class AdminKeys:
    """The password, and the keys of admin cookies and admin connection tokens."""

    def __init__(self, secret: str, password: str) -> None:
        self._password = hashlib.sha256(password.encode()).digest()
        self._cookie = _derive(secret, password, b"cookie")
        self.connection = _derive(secret, password, b"connection")

    def check_password(self, given: str) -> bool:
        """In constant time (both sides hashed first: their lengths do not show)."""
        return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), self._password)

    def cookie(self) -> str:
        payload = {"adm": "cookie", "exp": int(time.time() + COOKIE_TTL)}
        return jwt.encode(payload, self._cookie, algorithm="HS256")

    def valid_cookie(self, value: str | None) -> bool:
        if not value:
            return False
        try:
            claims = jwt.decode(value, self._cookie, algorithms=["HS256"],
                                options={"require": ["exp"]})  # fmt: skip
        except jwt.InvalidTokenError:
            return False
        return bool(claims.get("adm") == "cookie")

    def connection_token(self) -> tuple[str, int]:
        """A token for the page's WebSocket (verified by :mod:`roomcast.auth`), and its expiry."""
        expires = int(time.time() + TOKEN_TTL)
        payload = {"sub": ADMIN_USER, "exp": expires}
        token = jwt.encode(payload, self.connection, algorithm="HS256", headers={"kid": ADMIN_KID})
        return token, expires


def _derive(secret: str, password: str, purpose: bytes) -> bytes:
    message = b"roomcast admin " + purpose + b"\0" + hashlib.sha256(password.encode()).digest()
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


class Disconnect(msgspec.Struct, tag="disconnect"):
    session: str
    request: str  # the asking node's id for the answer
    node: str  # the asking node


class Disconnected(msgspec.Struct, tag="disconnected"):
    request: str
    node: str  # the node that closed the session


Command = Disconnect | Disconnected
_decode_command = msgspec.json.Decoder(Command).decode


class Admin:
    """The admin page's part of a node (created by :class:`roomcast.node.Node`)."""

    def __init__(self, node: Node, secret: str) -> None:
        self.node = node
        password = node.settings.admin_secret
        self.keys = None if password is None else AdminKeys(secret, password)
        if self.keys is not None:
            node.auth.admin_key = self.keys.connection
        self._tell = node.broker.on_event  # events of every other room go on to the hub
        node.broker.on_event = self._on_event
        self._pending: dict[str, asyncio.Future[str]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._publishing: asyncio.Future[Publication] | None = None

    @property
    def enabled(self) -> bool:
        return self.keys is not None

    def start(self) -> None:
        if self.enabled:
            self._spawn(self._subscribe())
            self._spawn(self._publish_stats())

    def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for future in self._pending.values():
            future.cancel()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- stats ------------------------------------------------------------------------

    async def _publish_stats(self) -> None:
        while True:
            try:
                self.publish_snapshot()
            except Exception:  # a bug: the next period tries again
                log.exception("stats not published")
            await asyncio.sleep(PERIOD)

    def publish_snapshot(self) -> None:
        """Publish this node's snapshot, unless it is draining or the last one is pending
        (a broker outage does not pile them up)."""
        node = self.node
        if node.state != "ready" or (self._publishing and not self._publishing.done()):
            return
        data = Raw(msgspec.json.encode(node.stats.snapshot()))
        self._publishing = node.broker.publish(Draft(ADMIN_ROOM, data, None, now_ms()))
        self._publishing.add_done_callback(_published)

    # -- commands ---------------------------------------------------------------------

    async def _subscribe(self) -> None:
        """Receive the control room's events, trying again while the broker is down."""
        delay = 1.0
        while True:
            try:
                await self.node.broker.subscribe(CONTROL_ROOM)
                return
            except BrokerError as exc:
                log.warning("admin commands unavailable: %s; retrying in %gs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(RETRY_MAX, delay * 2)

    async def disconnect(self, session_id: str) -> str | None:
        """Close session ``session_id`` (4004) on whichever node has it: that node's id,
        or None if no node answered in time. BrokerError if the broker is down."""
        node = self.node
        me = node.settings.node_id
        if self._close_local(session_id, me):
            return me
        if node.settings.broker.startswith("memory"):
            return None  # one node: nobody else to ask
        request = secrets.token_hex(8)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending[request] = future
        try:
            payload = msgspec.json.encode(Disconnect(session_id, request, me))
            await node.broker.broadcast(CONTROL_ROOM, payload, "")
            return await asyncio.wait_for(future, DISCONNECT_TIMEOUT)
        except TimeoutError:
            return None
        finally:
            self._pending.pop(request, None)

    def _close_local(self, session_id: str, by: str) -> bool:
        node = self.node
        session = node.sessions.get(session_id)
        if session is None or session.closed:
            return False
        log.info("session %s disconnected by an administrator (from node %s)", session_id, by,
                 extra=event("admin_disconnect", session=session_id, by=by))  # fmt: skip
        node.disconnect(session, CloseCode.ADMIN_DISCONNECT, REASON)
        return True

    def _on_event(self, room: str, payload: bytes, exclude: str) -> None:
        if room != CONTROL_ROOM:
            if self._tell is not None:
                self._tell(room, payload, exclude)
            return
        try:
            command = _decode_command(payload)
        except msgspec.DecodeError as exc:
            log.warning("ignoring a bad admin command: %s", exc)
            return
        me = self.node.settings.node_id
        if isinstance(command, Disconnect):
            if command.node != me and self._close_local(command.session, command.node):
                answer = msgspec.json.encode(Disconnected(command.request, me))
                self._spawn(self._answer(answer))
        else:
            future = self._pending.get(command.request)
            if future is not None and not future.done():
                future.set_result(command.node)

    async def _answer(self, payload: bytes) -> None:
        with contextlib.suppress(BrokerError):
            await self.node.broker.broadcast(CONTROL_ROOM, payload, "")


def _published(future: asyncio.Future[Publication]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.debug("stats not published: %s", future.exception())

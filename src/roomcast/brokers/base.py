"""The broker interface: six methods, one module per backend.

A broker assigns each published message its offset in its room, stores it in history
and hands it (as a :class:`Publication`) to the ``deliver`` callback of every node
subscribed to the room, this one included. Reference counting of subscriptions is the
caller's job (:class:`roomcast.node.Node` subscribes on a room's first local member
and unsubscribes after its last), so backends subscribe and unsubscribe plainly.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from msgspec import Raw

from roomcast.exceptions import BrokerError
from roomcast.protocol import Member


@dataclass(frozen=True, slots=True)
class Position:
    """Where a room's stream stands: its epoch and newest offset (0: no message yet)."""

    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class Draft:
    """A message to publish, before it has an offset."""

    room: str
    data: Raw
    sender: Member | None
    ts: int


@dataclass(frozen=True, slots=True)
class Publication:
    """A stored message: ``payload`` is its complete ``message`` event, encoded."""

    room: str
    epoch: str
    offset: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Page:
    """Messages of one room, oldest first, and the room's position when read."""

    position: Position
    entries: list[tuple[int, bytes]]


# Called with the publications of one commit (or one broker message), in order.
Deliver = Callable[[list[Publication]], None]
# Called with an event for a room's members (room, payload, session id not to send it to).
DeliverEvent = Callable[[str, bytes, str], None]


class Broker(ABC):
    # False while the backend cannot be reached: the node then reports not ready.
    available: bool = True
    # Where events sent with ``broadcast`` arrive, on every node; set before ``connect``.
    on_event: DeliverEvent | None = None
    # Connections to the backend made again after one was lost or failed (metrics).
    reconnects: int = 0

    async def ping(self) -> None:
        """One round trip to the backend (metrics); a single node has none to make."""
        return None

    async def broadcast(self, room: str, payload: bytes, exclude: str) -> None:
        """Send an event (not stored, no offset: ``joined``, ``left``) to the members of
        ``room`` on every node, except session ``exclude``. One node: deliver here."""
        if self.on_event is not None:
            self.on_event(room, payload, exclude)

    async def flush(self) -> None:
        """Wait until every publish made so far is stored (or failed)."""
        return None

    @abstractmethod
    async def connect(self, deliver: Deliver) -> None:
        """Start; publications of subscribed rooms go to ``deliver`` from now on."""

    @abstractmethod
    async def close(self) -> None:
        """Store what is pending, then stop."""

    @abstractmethod
    async def subscribe(self, room: str) -> None:
        """Deliver this room's publications to this node."""

    @abstractmethod
    async def unsubscribe(self, room: str) -> None:
        """Stop delivering this room's publications to this node."""

    @abstractmethod
    def publish(self, draft: Draft) -> asyncio.Future[Publication]:
        """Assign the next offset, store, deliver; the future resolves once stored.

        Drafts are stored in the order of the calls. The future fails with
        :class:`roomcast.exceptions.BrokerError` if the message could not be stored.
        """

    @abstractmethod
    async def read(
        self, room: str, *, after: int | None = None, before: int | None = None, limit: int
    ) -> Page:
        """Messages of ``room``: with ``after``, the oldest ``limit`` ones newer than it;
        otherwise the newest ``limit`` ones older than ``before`` (if given). Only those
        the room still shows, under its namespace's history size and TTL: consecutive
        offsets (:mod:`roomcast.history.limits`)."""


Pending = tuple[Draft, "asyncio.Future[Publication]"]


class GroupCommit:
    """The publish queue of a broker: every draft published while the previous commit
    runs (or within one loop tick) goes into the next call of ``commit``, in order.
    ``commit`` resolves or fails every future of its batch."""

    def __init__(self, commit: Callable[[list[Pending]], Awaitable[None]]) -> None:
        self._commit = commit
        self._queue: list[Pending] = []
        self._writer: asyncio.Task[None] | None = None
        self.closed = False

    def submit(self, draft: Draft) -> asyncio.Future[Publication]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Publication] = loop.create_future()
        if self.closed:
            future.set_exception(BrokerError("the broker is closed"))
            return future
        self._queue.append((draft, future))
        if self._writer is None:
            self._writer = loop.create_task(self._drain())
        return future

    async def flush(self) -> None:
        """Wait until everything submitted so far is committed (or failed)."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._writer)

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._commit(batch)
        finally:
            self._writer = None

"""The asyncio client of roomcast: commands with replies, events, reconnection, recovery.

    async with Client("ws://127.0.0.1:8000/ws", name="alice") as client:
        await client.join("lobby")
        await client.publish("lobby", {"text": "hi"})
        async for message in client.messages():
            print(message["from"], message["data"])

When the connection drops (and the app did not close the client), the client reconnects
with jittered exponential backoff and rejoins each of its rooms with ``since`` set to the
last message it delivered, so the app gets every missed message exactly once, in order.
Where that is impossible (the room's history was lost or trimmed) it says so with a
``lost`` event and :meth:`Client.lost`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from ssl import SSLContext
from types import TracebackType
from typing import Any

import aiohttp
from yarl import URL

from roomcast.client.backoff import Backoff
from roomcast.client.replies import Event, OkHook, Replies, parse_frame
from roomcast.client.rooms import RoomTracker
from roomcast.client.tokens import Token, TokenSource, refresh_delay
from roomcast.exceptions import ClientError, CommandError, ConnectionLost

log = logging.getLogger("roomcast.client")

FrameHook = Callable[[str], None]
# Errors of aiohttp and the socket that mean "this connection is gone or never came".
NETWORK_ERRORS = (aiohttp.ClientError, OSError, TimeoutError, ConnectionLost)


class ConnectError(ClientError):
    """The first connection to the server failed (later ones are retried)."""


class _NotSent(Exception):
    """The command could not be written: the connection is closing."""


class Client:
    """A roomcast connection that survives disconnections. See the module docstring.

    ``timeout`` bounds every command, including the time spent waiting for a
    reconnection (then TimeoutError). A command whose connection drops before its reply
    raises ConnectionLost: it may or may not have been done (a publish may be stored).
    ``on_frame`` is called with the text of every frame received, before the client
    handles it. ``heartbeat`` makes the client ping the server at that interval and
    reconnect when no pong comes (``None``: rely on the server's pings). ``backoff``
    paces reconnection attempts; ``reconnect=False`` turns them off. Events wait in an
    unbounded queue until the app reads them. ``ssl`` is for wss:// URLs: True checks the
    server's certificate against the system's CAs, an SSLContext as it is set up (for
    instance with a private CA), False not at all. ``token`` is the connection token
    (``--auth``), or an async function that fetches one: then every reconnection gets a
    new token and the client refreshes it before it expires (client/tokens.py).
    """

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        timeout: float = 10.0,
        reconnect: bool = True,
        backoff: Backoff | None = None,
        heartbeat: float | None = 20.0,
        on_frame: FrameHook | None = None,
        session: aiohttp.ClientSession | None = None,
        ssl: SSLContext | bool = True,
        token: Token | None = None,
    ) -> None:
        self.url = str(URL(url).update_query(name=name)) if name is not None else url
        self.name = name
        self.timeout = timeout
        self.reconnect = reconnect
        self.backoff = backoff if backoff is not None else Backoff()
        self.heartbeat = heartbeat
        self.on_frame = on_frame
        self.ssl = ssl
        self.tokens = TokenSource(token)
        self._refresher: asyncio.Task[None] | None = None
        self.welcome: Event | None = None
        self._http = session
        self._own_http = session is None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._ready = asyncio.Event()
        self._closed = False
        self._ended = False
        self._failure: ConnectionLost | None = None
        self._replies = Replies()
        self._events: asyncio.Queue[Event | None] = asyncio.Queue()
        self._rooms = RoomTracker()
        self._runner: asyncio.Task[None] | None = None
        self._attempts = 0  # failed reconnection attempts in a row
        self._send_lock = asyncio.Lock()

    # -- life cycle -------------------------------------------------------------------

    async def __aenter__(self) -> Client:
        return await self.connect()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def connect(self) -> Client:
        """Open the first connection; raises :class:`ConnectError` if it fails."""
        if self._runner is not None or self._closed:
            raise RuntimeError("a Client connects once")
        if self._http is None:
            self._http = aiohttp.ClientSession()
        try:
            ws = await self._open()
        except NETWORK_ERRORS as exc:
            await self._close_http()
            raise ConnectError(f"cannot connect to {self.url}: {exc}") from exc
        self._ws = ws
        self._ready.set()
        self._runner = asyncio.create_task(self._run(ws))
        if self.tokens.renewable:
            self._refresher = asyncio.create_task(self._keep_token_fresh())
        return self

    async def close(self) -> None:
        """Close the connection for good: pending commands raise ConnectionLost and the
        event iterators end once they have yielded what was already received."""
        self._closed = True
        self._ready.set()  # wake commands waiting for a connection: they see _closed
        if self._refresher is not None:
            self._refresher.cancel()
        if self._runner is not None and not self._runner.done():
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        self._finish()
        await self._close_http()

    @property
    def connected(self) -> bool:
        """True while a connection is up and every room has been rejoined."""
        return self._ready.is_set() and not self._closed

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def session_id(self) -> str | None:
        """The server's id of the current (or last) connection."""
        return None if self.welcome is None else str(self.welcome["session"])

    # -- rooms ------------------------------------------------------------------------

    @property
    def rooms(self) -> list[str]:
        """The rooms the client is in (and rejoins after a reconnection)."""
        return self._rooms.names()

    def position(self, room: str) -> tuple[str, int] | None:
        """(epoch, offset) of the last message of ``room`` delivered to the app; persist
        it to resume later with ``join(room, since=...)``."""
        return self._rooms.position(room)

    def lost(self, room: str) -> bool:
        """True if messages of ``room`` were missed and could not be recovered (since the
        app joined it); a ``lost`` event was queued when that happened."""
        return self._rooms.lost(room)

    # -- commands ---------------------------------------------------------------------

    async def join(self, room: str, *, since: tuple[str, int] | None = None) -> Event:
        """Join ``room``; returns the ``ok`` (``epoch``, ``offset``, ``recovered``).

        With ``since=(epoch, offset)`` the messages after it are delivered first.
        """
        command: Event = {"type": "join", "room": room}
        fresh = room not in self._rooms
        if since is not None:
            command["since"] = {"epoch": since[0], "offset": since[1]}
            if fresh:
                self._rooms.expect(room, since[0], since[1])
        try:
            return await self._request(command, self._on_joined)
        except BaseException:
            if fresh:
                self._rooms.forget_joining(room)
            raise

    async def leave(self, room: str) -> None:
        """Leave ``room``; from now on none of its events are delivered."""
        self._rooms.forget(room)
        await self._request({"type": "leave", "room": room})

    async def publish(self, room: str, data: Any) -> int:
        """Publish ``data`` (any JSON value) to ``room``; returns its offset once stored."""
        ok = await self._request({"type": "publish", "room": room, "data": data})
        return int(ok["offset"])

    async def presence(self, room: str) -> list[Event]:
        """The members of ``room``: ``[{"session": ..., "user": ...}, ...]``."""
        ok = await self._request({"type": "presence", "room": room})
        members: list[Event] = ok["members"]
        return members

    async def history(self, room: str, limit: int = 100, before: int | None = None) -> list[Event]:
        """The newest ``limit`` messages of ``room`` (before offset ``before``), oldest first."""
        command: Event = {"type": "history", "room": room, "limit": limit}
        if before is not None:
            command["before"] = before
        ok = await self._request(command)
        messages: list[Event] = ok["messages"]
        return messages

    async def ping(self) -> float:
        """Round trip to the server; returns its duration in seconds."""
        start = time.perf_counter()
        await self._request({"type": "ping"})
        return time.perf_counter() - start

    async def refresh(self, token: str | None = None) -> float:
        """Give the connection a new token (by default a fresh one from the provider);
        returns when it expires (unix time, 0: never)."""
        token = token if token is not None else await self.tokens.fresh()
        if token is None:
            raise ValueError("no token to refresh with: give one, or a provider to Client")
        ok = await self._request({"type": "refresh", "token": token})
        self.tokens.current = token
        return float(ok.get("expires", 0))

    async def _keep_token_fresh(self) -> None:
        """Refresh the token a little before it expires, for as long as the client runs."""
        while not self._closed:
            delay = refresh_delay(self.tokens.current or "")
            if delay is None:
                return
            await asyncio.sleep(delay)
            try:
                await self.refresh()
            except (ClientError, TimeoutError, aiohttp.ClientError) as exc:
                log.warning("token refresh failed (retrying): %s", exc)
                await asyncio.sleep(self.backoff.delay(0))

    async def request(self, command: Event, *, timeout: float | None = None) -> Event:
        """Send any command (an ``id`` is added) and return its reply frame."""
        return await self._request(command, timeout=timeout)

    # -- events -----------------------------------------------------------------------

    async def events(self) -> AsyncIterator[Event]:
        """Every event, in order: ``message``, ``joined``, ``left``, unmatched ``error``
        from the server, and the client's own ``disconnected``, ``reconnected``,
        ``lost`` and ``rejoin_failed``. Ends when the client is closed; raises
        ConnectionLost if it gave up reconnecting. All iterators share one queue."""
        while True:
            event = await self._events.get()
            if event is None:
                self._events.put_nowait(None)  # let every other iterator end too
                if self._failure is not None:
                    raise ConnectionLost(str(self._failure))
                return
            yield event

    async def messages(self) -> AsyncIterator[Event]:
        """The ``message`` events of :meth:`events` (the others are dropped)."""
        async for event in self.events():
            if event["type"] == "message":
                yield event

    # -- requests ---------------------------------------------------------------------

    async def _request(
        self, command: Event, on_ok: OkHook | None = None, timeout: float | None = None
    ) -> Event:
        limit = self.timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(limit):
                return await self._attempt(command, on_ok)
        except TimeoutError:
            raise TimeoutError(f"no reply to {command.get('type')!r} within {limit}s") from None

    async def _attempt(self, command: Event, on_ok: OkHook | None) -> Event:
        """Send ``command`` on the current connection, waiting for one if there is none."""
        while True:
            ws = await self._wait_ready()
            try:
                return await self._call(ws, command, on_ok)
            except _NotSent:
                continue

    async def _wait_ready(self) -> aiohttp.ClientWebSocketResponse:
        while True:
            if self._closed:
                raise ConnectionLost(str(self._failure or "the client is closed"))
            await self._ready.wait()
            ws = self._ws
            if ws is not None and self._ready.is_set() and not self._closed:
                return ws

    async def _call(
        self, ws: aiohttp.ClientWebSocketResponse, command: Event, on_ok: OkHook | None
    ) -> Event:
        command_id, future = self._replies.expect(on_ok)
        try:
            text = json.dumps({**command, "id": command_id}, separators=(",", ":"))
            async with self._send_lock:
                await ws.send_str(text)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            self._replies.discard(command_id)
            if ws is self._ws:
                self._ready.clear()  # the reader will see the end and reconnect
            raise _NotSent from exc
        except BaseException:  # data that is not JSON, or cancelled while sending
            self._replies.discard(command_id)
            raise
        return await future

    # -- the connection ---------------------------------------------------------------

    async def _open(self) -> aiohttp.ClientWebSocketResponse:
        """Connect and read the welcome."""
        assert self._http is not None
        try:
            await self.tokens.fresh()
        except Exception as exc:  # the app's provider failed: like a failed connection
            raise ConnectionLost(f"no connection token: {exc}") from exc
        ws = await asyncio.wait_for(
            self._http.ws_connect(
                self.url,
                headers=self.tokens.headers(),
                compress=0,
                autoping=True,
                heartbeat=self.heartbeat,
                max_msg_size=0,
                timeout=aiohttp.ClientWSTimeout(ws_close=self.timeout),
                ssl=self.ssl,
            ),
            self.timeout,
        )
        try:
            message = await ws.receive(timeout=self.timeout)
            if message.type is not aiohttp.WSMsgType.TEXT:
                raise ConnectionLost(f"no welcome from the server ({message.type.name})")
            self._hook(message.data)
            welcome = parse_frame(message.data)
            if welcome is None or welcome["type"] != "welcome":
                raise ConnectionLost(f"expected a welcome, got {message.data[:200]!r}")
        except BaseException:
            await ws.close()
            raise
        self.welcome = welcome
        return ws

    async def _run(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Serve connections until closed, reconnecting after each drop."""
        first = True
        try:
            while True:
                code = await self._serve(ws, first)
                first = False
                if self._closed:
                    return
                self._emit({"type": "disconnected", "code": code})
                if not self.reconnect:
                    raise ConnectionLost(f"the connection closed (code {code})")
                ws = await self._reconnect()
        except ConnectionLost as exc:
            self._failure = exc
        finally:
            self._closed = True
            self._finish()

    async def _serve(self, ws: aiohttp.ClientWebSocketResponse, first: bool) -> int | None:
        """Read ``ws`` until it ends, rejoining the rooms first; returns the close code."""
        self._ws = ws
        reader = asyncio.create_task(self._read(ws))
        try:
            if first:
                pass  # connect() made it ready: there is nothing to rejoin yet
            elif await self._rejoin(ws):
                self._attempts = 0
                self._ready.set()
                self._emit({"type": "reconnected", "session": self.session_id})
            else:
                await ws.close()
            await reader
        finally:
            reader.cancel()
            self._ready.clear()
            self._ws = None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), self.timeout)
        return ws.close_code

    async def _reconnect(self) -> aiohttp.ClientWebSocketResponse:
        """A new connection, after a backoff that grows until one is usable (rejoined)."""
        while True:
            if self.backoff.exhausted(self._attempts):
                raise ConnectionLost(f"gave up reconnecting after {self._attempts} attempts")
            await asyncio.sleep(self.backoff.delay(self._attempts))
            self._attempts += 1
            try:
                return await self._open()
            except NETWORK_ERRORS as exc:
                log.debug("reconnection attempt %d failed: %s", self._attempts, exc)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            while True:
                message = await ws.receive()
                if message.type is aiohttp.WSMsgType.TEXT:
                    self._on_text(message.data)
                elif message.type is not aiohttp.WSMsgType.BINARY:
                    return  # CLOSE, CLOSING, CLOSED or ERROR: the connection is over
        finally:
            self._ready.clear()
            self._replies.fail_all("the connection dropped before the reply")

    def _finish(self) -> None:
        """The client is done: fail what waits, end the iterators (once)."""
        self._ready.set()
        self._replies.fail_all("the client is closed")
        if not self._ended:
            self._ended = True
            self._events.put_nowait(None)

    async def _close_http(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.close()
            self._http = None

    # -- rejoining --------------------------------------------------------------------

    async def _rejoin(self, ws: aiohttp.ClientWebSocketResponse) -> bool:
        """Rejoin every room with ``since``; False if the connection is not usable."""
        rooms = self._rooms.names()
        results = await asyncio.gather(
            *(self._rejoin_room(ws, room) for room in rooms), return_exceptions=True
        )
        usable = True
        for room, result in zip(rooms, results, strict=True):
            if isinstance(result, CommandError) and result.code != "unavailable":
                self._rooms.forget(room)
                self._emit({"type": "rejoin_failed", "room": room, "code": result.code,
                            "message": result.message})  # fmt: skip
            elif isinstance(result, BaseException):
                log.debug("rejoining %s failed: %s", room, result)
                usable = False
        return usable

    async def _rejoin_room(self, ws: aiohttp.ClientWebSocketResponse, room: str) -> None:
        command = {"type": "join", "room": room, "since": self._rooms.since(room)}
        try:
            async with asyncio.timeout(self.timeout):
                await self._call(ws, command, self._on_rejoined)
        except _NotSent:
            raise ConnectionLost("the connection dropped while rejoining") from None

    def _on_joined(self, ok: Event) -> None:
        if self._rooms.joined(ok):
            self._emit_lost(ok)

    def _on_rejoined(self, ok: Event) -> None:
        if self._rooms.rejoined(ok):
            self._emit_lost(ok)

    def _emit_lost(self, ok: Event) -> None:
        self._emit({"type": "lost", "room": ok["room"], "epoch": ok["epoch"],
                    "offset": ok["offset"]})  # fmt: skip

    # -- incoming frames --------------------------------------------------------------

    def _on_text(self, text: str) -> None:
        self._hook(text)
        frame = parse_frame(text)
        if frame is None:
            return
        kind = frame["type"]
        if self._replies.resolve(frame):
            return
        if kind == "message":
            if self._rooms.accept(frame):
                self._emit(frame)
        elif kind in {"joined", "left"}:
            if frame.get("room") in self._rooms:
                self._emit(frame)
        elif kind == "error":
            self._emit(frame)

    def _hook(self, text: str) -> None:
        if self.on_frame is None:
            return
        try:
            self.on_frame(text)
        except Exception:
            log.exception("on_frame failed")

    def _emit(self, event: Event) -> None:
        self._events.put_nowait(event)

"""The WebSocket transport: aiohttp does the handshake and reads; fan-out writes
pre-built frames straight to the socket's transport.

Outbound frames bypass aiohttp's per-message send path: each is built once per message
(:class:`roomcast.frame.Frame`) and written to every member's asyncio transport, which
is safe because the connection never uses compression and every write is one whole
frame. The transport's write buffer is the session's bounded outbound queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import TYPE_CHECKING, ClassVar, Final

from aiohttp import WSMsgType, web

from roomcast.auth import Identity
from roomcast.config import Settings
from roomcast.exceptions import ErrorCode, ProtocolError
from roomcast.frame import Frame
from roomcast.http.errors import error_response
from roomcast.node import Node
from roomcast.transports.base import Sinks

if TYPE_CHECKING:
    from roomcast.session import Session

log = logging.getLogger("roomcast.websocket")

PING_FRAME: Final = b"\x89\x00"  # FIN + opcode 9 (ping), empty payload
MAX_NAME_LENGTH: Final = 64
NODE_KEY: Final = web.AppKey("node", Node)
_closing: set[asyncio.Task[None]] = set()


class WebSocketTransport:
    kind: ClassVar[str] = "websocket"
    pongs: ClassVar[bool] = True
    __slots__ = ("_close_timeout", "_limit", "_transport", "_ws")

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        limit: int,
        close_timeout: float,
    ) -> None:
        self._ws = ws
        self._transport = transport
        self._limit = limit
        self._close_timeout = close_timeout

    @property
    def sink(self) -> asyncio.Transport:
        return self._transport

    @property
    def buffered(self) -> int:
        """Bytes written and not yet sent (logged when the client is cut off as slow)."""
        return self._transport.get_write_buffer_size()

    @staticmethod
    def broadcast(frame: Frame, sinks: Sinks, max_buffer: int) -> list[Session]:
        """The fan-out hot loop: the same bytes to every member's socket."""
        data = frame.websocket
        slow: list[Session] = []
        for session, transport in sinks.items():
            try:
                transport.write(data)
            except RuntimeError:  # closed under us: its reader removes the session
                continue
            if transport.get_write_buffer_size() > max_buffer:
                slow.append(session)
        return slow

    def send(self, frame: Frame) -> bool:
        transport = self._transport
        if transport.is_closing():
            return True  # the connection is ending; its reader cleans the session up
        transport.write(frame.websocket)
        return transport.get_write_buffer_size() <= self._limit

    def ping(self) -> None:
        if not self._transport.is_closing():
            self._transport.write(PING_FRAME)

    def close(self, code: int, reason: str) -> None:
        task = asyncio.get_running_loop().create_task(self._close(code, reason))
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    async def _close(self, code: int, reason: str) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self._ws.close(code=code, message=reason.encode()), self._close_timeout
            )
        if self._transport.get_write_buffer_size() > 0:
            self._transport.abort()  # the peer stopped reading: do not wait for it


def user_name(request: web.Request) -> str:
    name = request.query.get("name")
    if name is None:
        return f"anon-{secrets.token_hex(4)}"
    if not 1 <= len(name) <= MAX_NAME_LENGTH:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"name must be 1-{MAX_NAME_LENGTH} characters")
    return name


def valid_close_code(code: int) -> bool:
    """A code a peer may send in a close frame (RFC 6455 7.4): 1000-1003, 1007-1014
    and 3000-4999; not 1004-1006 or 1015, which must never be sent."""
    return code in {1000, 1001, 1002, 1003} or 1007 <= code <= 1014 or 3000 <= code <= 4999


async def answer_close(ws: web.WebSocketResponse) -> None:
    """Answer the client's close frame: its own code echoed back (1000 for a close without
    a code, which aiohttp reads as 0), or 1002 if it sent a code no endpoint may send
    (aiohttp's reader lets the reserved 1006 through)."""
    code = ws.close_code
    if code is not None and not ws.closed:
        answer = 1000 if code == 0 else code if valid_close_code(code) else 1002
        with contextlib.suppress(Exception):
            await ws.close(code=answer)


def connection_token(request: web.Request) -> str | None:
    """The client's connection token: ``?token=`` (browsers cannot set headers on a
    WebSocket or EventSource) or ``Authorization: Bearer``."""
    token = request.query.get("token")
    if token:
        return token
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def identify(node: Node, request: web.Request) -> Identity:
    """Who the client of a new connection is; a ProtocolError (401) if it may not connect."""
    return node.auth.identify(connection_token(request), user_name(request))


def websocket_response(settings: Settings) -> web.WebSocketResponse:
    """The WebSocket stack of roomcast: no compression (fan-out writes pre-built frames),
    pings answered by the session (it notes the client is alive), bounded messages."""
    return web.WebSocketResponse(
        autoping=False,
        autoclose=False,  # the handler answers a close itself: answer_close()
        compress=False,
        max_msg_size=settings.max_message_size,
        timeout=settings.close_timeout,
    )


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    """``GET /ws``: upgrade, then feed every frame of the client to its session."""
    node = request.app[NODE_KEY]
    if node.state != "ready":  # a broker outage is no reason: publishes say `unavailable`
        raise web.HTTPServiceUnavailable(text="the server is not accepting connections")
    try:
        identity = identify(node, request)
    except ProtocolError as refused:
        return error_response(refused)
    settings = node.settings
    ws = websocket_response(settings)
    await ws.prepare(request)
    transport = request.transport
    if transport is None:  # the client went away during the handshake
        return ws
    link = WebSocketTransport(ws, transport, settings.max_buffer, settings.close_timeout)
    session = node.open_session(link, identity)
    try:
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                await session.handle(message.data)
            elif message.type is WSMsgType.BINARY:
                session.touch()
                error = ProtocolError(ErrorCode.BAD_REQUEST, "binary frames are not supported")
                session.fail(error)
            elif message.type is WSMsgType.PING:
                session.touch()
                await ws.pong(message.data)
            elif message.type is WSMsgType.PONG:
                session.touch()
            else:  # ERROR: aiohttp already closed with the right code (1009, 1002, ...)
                break
        await answer_close(ws)  # the loop ends on the client's close frame
    finally:
        node.close_session(session)
    return ws

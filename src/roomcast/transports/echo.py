"""``GET /echo`` (``--enable-echo``): a WebSocket echo on the very stack of ``/ws``.

It exists for conformance testing (the Autobahn|Testsuite, docs/security.md): the
handshake, the reader and its limits are those of ``/ws`` (:func:`websocket_response`),
and replies are written the way ``/ws`` writes its frames, as whole pre-built frames
straight to the socket's transport. Text comes back as text, binary as binary, a ping
gets a pong with the same payload. Off by default: it has no use in production.
"""

from __future__ import annotations

import asyncio

from aiohttp import WSMsgType, web

from roomcast.frame import websocket_binary_frame, websocket_text_frame
from roomcast.transports.websocket import NODE_KEY, answer_close, websocket_response


async def echo_handler(request: web.Request) -> web.StreamResponse:
    """Upgrade, then send every message back until the client closes."""
    ws = websocket_response(request.app[NODE_KEY].settings)
    await ws.prepare(request)
    transport = request.transport
    if transport is None:  # the client went away during the handshake
        return ws
    async for message in ws:
        if message.type is WSMsgType.TEXT:
            await _write(request, transport, websocket_text_frame(message.data.encode()))
        elif message.type is WSMsgType.BINARY:
            await _write(request, transport, websocket_binary_frame(message.data))
        elif message.type is WSMsgType.PING:
            await ws.pong(message.data)
        elif message.type is WSMsgType.ERROR:  # aiohttp already closed with its code
            break
    await answer_close(ws)
    return ws


async def _write(request: web.Request, transport: asyncio.Transport, frame: bytes) -> None:
    """One whole frame to the socket; wait while the peer does not read (a client that
    sends without reading must not grow the server's buffer without bound)."""
    if not transport.is_closing():
        transport.write(frame)
        await request.writer.drain()

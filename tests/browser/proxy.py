"""A hostile reverse proxy for browser tests: what a corporate proxy does to real-time apps.

It serves everything of the server behind it (the page, ``/roomcast.js``, the HTTP
endpoints) but refuses WebSocket upgrades with 502, and with ``buffer_sse`` it holds an
event stream back until the stream ends (as a buffering proxy does), so the browser never
sees its first event. An aiohttp app on a thread of its own, on a free port.
"""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType

from aiohttp import ClientSession, ClientTimeout, web

from roomcast.testing import free_port

# Hop-by-hop headers (RFC 9110 7.6.1) and those the proxy sets itself. Host goes through,
# as from nginx with `proxy_set_header Host $http_host`: the server compares a page's
# Origin with it.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailer", "transfer-encoding", "upgrade", "content-length", "accept-encoding",
})  # fmt: skip


class HostileProxy:
    def __init__(self, upstream: str, *, buffer_sse: bool = False) -> None:
        self.upstream = upstream.rstrip("/")
        self.buffer_sse = buffer_sse
        self.port = free_port()
        self.refused_upgrades = 0
        self.buffered_streams = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> HostileProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> HostileProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def _start(self) -> None:
        self._session = ClientSession(timeout=ClientTimeout(total=None, sock_read=None))
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._forward)
        # A stream ends upstream as soon as the browser goes away.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            self.refused_upgrades += 1
            return web.Response(status=502, text="WebSockets are not allowed through this proxy")
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        async with self._session.request(
            request.method,
            self.upstream + str(request.rel_url),
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as answer:
            out = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
            response = web.StreamResponse(status=answer.status, headers=out)
            stream = answer.headers.get("Content-Type", "").startswith("text/event-stream")
            if stream and self.buffer_sse:
                self.buffered_streams += 1
                data = await answer.read()  # until the stream ends: the browser gives up first
                await response.prepare(request)
                await response.write(data)
                return response
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

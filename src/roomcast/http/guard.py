"""The guard of the client endpoints (``/ws``, ``/sse``, ``/poll``, ``POST /send``,
``/echo``): an aiohttp middleware that refuses, before any WebSocket upgrade or event
stream starts, a browser page of another origin, a client over its connection limits or
connect rate, and the node's connection limit; and a watch on new TCP connections that
closes those that do not send a whole request in time (slowloris). docs/security.md.

The HTTP API, the pages, ``/health`` and ``/ready`` are not guarded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import ClassVar, Final

from aiohttp import hdrs, web
from aiohttp.web_protocol import RequestHandler

from roomcast.config import Settings
from roomcast.exceptions import ErrorCode, ProtocolError
from roomcast.http.errors import error_response
from roomcast.limits import (
    Connections,
    ConnectRate,
    OriginPolicy,
    TrustedProxies,
    limit_key,
    retry_after,
)

log = logging.getLogger("roomcast.guard")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CHECKED: Final = frozenset({"/ws", "/sse", "/poll", "/send", "/echo"})  # the Origin
COUNTED: Final = frozenset({"/ws", "/sse", "/poll", "/echo"})  # live connections
SESSION_HEADER: Final = "X-Roomcast-Session"  # a long poll's session token, or ?session=
FULL_RETRY: Final = 5.0  # Retry-After (s) of a refusal for too many connections


class Refused(ProtocolError):
    """A refusal of the guard; ``retry`` seconds go in ``Retry-After``."""

    def __init__(self, code: str, message: str, retry: float | None = None) -> None:
        super().__init__(code, message)
        self.retry = retry

    def response(self) -> web.Response:
        response = error_response(self)
        if self.retry is not None:
            response.headers[hdrs.RETRY_AFTER] = retry_after(self.retry)
        return response


class Handshakes:
    """Closes a new TCP connection that has not sent a whole first request (its
    headers) within ``timeout`` seconds: one timer per connection, cancelled by the
    first request (:meth:`arrived`) or when the connection ends."""

    __slots__ = ("_pending", "timeout")

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._pending: dict[RequestHandler, asyncio.TimerHandle] = {}

    def opened(self, connection: RequestHandler, transport: asyncio.BaseTransport) -> None:
        loop = asyncio.get_running_loop()
        self._pending[connection] = loop.call_later(
            self.timeout, self._expire, connection, transport
        )

    def arrived(self, connection: RequestHandler) -> None:
        timer = self._pending.pop(connection, None)
        if timer is not None:
            timer.cancel()

    def _expire(self, connection: RequestHandler, transport: asyncio.BaseTransport) -> None:
        self._pending.pop(connection, None)
        if not transport.is_closing():
            log.debug("no request within %gs: connection closed", self.timeout)
            transport.close()

    def watch(self, server: web.Server) -> None:
        """Start a timer for every connection ``server`` accepts from now on."""
        made, lost = server.connection_made, server.connection_lost

        def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self.opened(handler, transport)

        def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
            self.arrived(handler)
            lost(handler, exc)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]


class Guard:
    """The middleware (``web.Application(middlewares=[Guard(settings)])``)."""

    __middleware_version__: ClassVar[int] = 1  # aiohttp: a new-style middleware

    def __init__(self, settings: Settings) -> None:
        self.origins = OriginPolicy(settings.allowed_origins)
        self.proxies = TrustedProxies(settings.trusted_proxies)
        self.connections = Connections(settings.max_connections, settings.max_connections_per_ip)
        self.rate = ConnectRate(settings.connect_rate, settings.connect_burst)
        self.handshakes = Handshakes(settings.handshake_timeout)

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.handshakes.arrived(request.protocol)
        path = request.path
        if path not in CHECKED:
            return await handler(request)
        headers = request.headers
        refusal = self.origins.refusal(headers.get(hdrs.ORIGIN), headers.get(hdrs.HOST))
        if refusal is not None:
            return Refused(ErrorCode.FORBIDDEN, refusal).response()
        if path not in COUNTED:
            return await handler(request)
        key = self.client_key(request)
        try:
            self.admit(key, opens_session(request))
        except Refused as refused:
            return refused.response()
        self.connections.acquire(key)
        try:
            return await handler(request)
        finally:
            self.connections.release(key)

    def client_key(self, request: web.Request) -> str:
        address = self.proxies.client(
            request.remote, request.headers.getall(hdrs.X_FORWARDED_FOR, ())
        )
        return limit_key(address)

    def admit(self, key: str, new: bool) -> None:
        """Raise :class:`Refused` if one more connection of ``key`` is too many."""
        if self.connections.full():
            total = self.connections.total_limit
            raise Refused(
                ErrorCode.UNAVAILABLE,
                f"the server is full ({total} connections): try again later",
                FULL_RETRY,
            )
        if self.connections.full_for(key):
            raise Refused(
                ErrorCode.RATE_LIMITED,
                f"too many connections from your address ({self.connections.per_key_limit} "
                "open): close one or try again later",
                FULL_RETRY,
            )
        wait = self.rate.take(key) if new else 0.0
        if wait > 0:
            raise Refused(
                ErrorCode.RATE_LIMITED,
                f"too many new connections from your address (more than {self.rate.rate:g} "
                "a second): try again later",
                wait,
            )

    @staticmethod
    def of(app: web.Application) -> Guard | None:
        return next((m for m in app.middlewares if isinstance(m, Guard)), None)


def opens_session(request: web.Request) -> bool:
    """Whether the request opens a new session (what the connect rate counts): every
    WebSocket and event stream, and a first long poll (one without a session token; the
    next polls of a client in a busy room may come many times a second)."""
    if request.path != "/poll":
        return True
    return "session" not in request.query and SESSION_HEADER not in request.headers


def watch_handshakes(runner: web.AppRunner) -> None:
    """After ``runner.setup()``: the handshake timeout of the app's guard, if it has one."""
    guard = Guard.of(runner.app)
    if guard is not None and runner.server is not None:
        guard.handshakes.watch(runner.server)

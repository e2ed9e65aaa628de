"""``GET /metrics``: this node's metrics in the Prometheus text format
(:mod:`roomcast.metrics`), and the middleware that counts the JSON error answers of
every HTTP route by code (and logs authentication failures, never the credentials)."""

from __future__ import annotations

import logging
from typing import ClassVar, Final

import msgspec
from aiohttp import hdrs, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from roomcast.exceptions import ErrorCode
from roomcast.http.guard import Guard, Handler
from roomcast.logs import auth_failure
from roomcast.metrics import Meter, registry
from roomcast.transports.websocket import NODE_KEY

log = logging.getLogger("roomcast.http")

PATH: Final = "/metrics"
REGISTRY_KEY: Final = web.AppKey("metrics_registry", CollectorRegistry)


class ErrorBody(msgspec.Struct):
    code: str
    message: str = ""


_decode_error = msgspec.json.Decoder(ErrorBody).decode


def add_routes(app: web.Application) -> None:
    """``GET /metrics`` for the app's node, and the error counter (outermost, so that
    the guard's refusals are counted too)."""
    node = app[NODE_KEY]
    app[REGISTRY_KEY] = registry(node)
    app.router.add_get(PATH, serve)
    app.middlewares.insert(0, ErrorCounter(node.meter))


async def serve(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={hdrs.CONTENT_TYPE: CONTENT_TYPE_LATEST})


class ErrorCounter:
    """Counts each JSON error answer (``{"type":"error","code":...}``) by its code."""

    __middleware_version__: ClassVar[int] = 1

    def __init__(self, meter: Meter) -> None:
        self.meter = meter

    async def __call__(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if response.status >= 400 and isinstance(response, web.Response):
            body = response.body
            if response.content_type == "application/json" and isinstance(body, bytes):
                self.count(request, body)
        return response

    def count(self, request: web.Request, body: bytes) -> None:
        try:
            error = _decode_error(body)
        except msgspec.DecodeError:
            return  # not an error of roomcast's
        self.meter.error(error.code)
        if error.code == ErrorCode.UNAUTHORIZED:
            auth_failure(log, error.message, client=client_address(request), path=request.path)


def client_address(request: web.Request) -> str:
    """The client's address, behind the trusted proxies if the guard knows them."""
    guard = Guard.of(request.app)
    if guard is None:
        return request.remote or "unknown"
    address = guard.proxies.client(request.remote, request.headers.getall(hdrs.X_FORWARDED_FOR, ()))
    return "unknown" if address is None else str(address)

"""Health checks, the chat page and its static files."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from roomcast.http.errors import json_body
from roomcast.protocol import encode
from roomcast.transports.websocket import NODE_KEY

STATIC = Path(__file__).resolve().parent.parent / "static"


def add_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app.router.add_get("/", index)
    app.router.add_get("/roomcast.js", client_script)
    app.router.add_static("/static/", STATIC, append_version=False)


async def health(request: web.Request) -> web.Response:
    """Liveness: 200 while the process runs."""
    return json_body(encode({"status": "ok"}))


async def ready(request: web.Request) -> web.Response:
    """Readiness: 200 only while the node accepts connections."""
    node = request.app[NODE_KEY]
    status = 200 if node.ready else 503
    body = {"status": node.state, "node": node.settings.node_id, "broker": node.broker.available}
    return json_body(encode(body), status)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})


async def client_script(request: web.Request) -> web.FileResponse:
    """The browser client (an ES module): ``import * as roomcast from "/roomcast.js"``.

    Module scripts load with CORS, so pages of other origins may import it too (its
    WebSocket transport works from anywhere; SSE and long polling need the same origin).
    """
    headers = {
        "Content-Type": "text/javascript; charset=utf-8",
        "Cache-Control": "no-cache",
        "Access-Control-Allow-Origin": "*",
    }
    return web.FileResponse(STATIC / "roomcast.js", headers=headers)

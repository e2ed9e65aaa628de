"""The aiohttp application: every route of roomcast on one port."""

from __future__ import annotations

from aiohttp import web

from roomcast.http import admin, api, demo, metrics, pages
from roomcast.http.guard import Guard
from roomcast.node import Node
from roomcast.transports.echo import echo_handler
from roomcast.transports.longpoll import poll_handler
from roomcast.transports.send import BUCKETS_KEY, Buckets, send_handler
from roomcast.transports.sse import sse_handler
from roomcast.transports.websocket import NODE_KEY, websocket_handler


def create_app(node: Node) -> web.Application:
    # The HTTP API reads bodies itself, to answer an oversized one with a JSON error.
    app = web.Application(
        client_max_size=node.settings.max_message_size, middlewares=[Guard(node.settings)]
    )
    app[NODE_KEY] = node
    app[BUCKETS_KEY] = Buckets(node.settings.publish_rate, node.settings.publish_burst)
    app.router.add_get("/ws", websocket_handler)
    if node.settings.enable_echo:  # conformance testing only (docs/security.md)
        app.router.add_get("/echo", echo_handler)
    app.router.add_get("/sse", sse_handler)
    app.router.add_get("/poll", poll_handler)
    app.router.add_post("/send", send_handler)
    api.add_routes(app)
    pages.add_routes(app)
    metrics.add_routes(app)  # GET /metrics; error answers counted by code
    demo.add_routes(app)  # /demo/: the use-case demos (docs/demos.md)
    admin.add_routes(app)  # /admin: the admin page (docs/operations.md#admin-page)
    return app

"""The aiohttp application: every route of roomcast on one port."""

from __future__ import annotations

from aiohttp import web

from roomcast.http import api, pages
from roomcast.node import Node
from roomcast.transports.websocket import NODE_KEY, websocket_handler


def create_app(node: Node) -> web.Application:
    # The HTTP API reads bodies itself, to answer an oversized one with a JSON error.
    app = web.Application(client_max_size=node.settings.max_message_size)
    app[NODE_KEY] = node
    app.router.add_get("/ws", websocket_handler)
    api.add_routes(app)
    pages.add_routes(app)
    return app

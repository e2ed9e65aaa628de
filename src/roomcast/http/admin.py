"""``/admin``: the admin page, its login and its API (docs/operations.md#admin-page).

The page is on when the node has ``--admin-password`` or ``--api-key``; otherwise every
route answers 403. ``POST /admin/login`` checks the password (in constant time, a few
attempts per client address) and sets an HttpOnly, ``SameSite=Strict`` cookie (``Secure``
over TLS) holding a signed admin token; every other ``/admin/`` route needs that cookie
and the ``X-Roomcast-Admin`` header, which a page of another site cannot send without a
CORS preflight that roomcast never grants (and an ``Origin``, when sent, must be this
server's own): no cross-site request forgery.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import msgspec
from aiohttp import hdrs, web
from msgspec import Raw

from roomcast.admin import COOKIE_TTL, Admin
from roomcast.auth import ADMIN_ROOM, RESERVED
from roomcast.exceptions import BrokerError, ErrorCode, ProtocolError
from roomcast.http.errors import error_response, json_body
from roomcast.http.guard import Guard, Refused
from roomcast.http.pages import STATIC
from roomcast.limits import ConnectRate, same_origin
from roomcast.logs import event
from roomcast.node import Node
from roomcast.protocol import check_room, encode, encode_error
from roomcast.transports.websocket import NODE_KEY

log = logging.getLogger("roomcast.admin")

COOKIE: Final = "roomcast_admin"
HEADER: Final = "X-Roomcast-Admin"  # any value; its presence is what counts
LOGIN_RATE: Final = 0.1  # login attempts per second per client address...
LOGIN_BURST: Final = 5  # ...and at once
MAX_SESSION_ID: Final = 64
OFF: Final = "the admin page is off: start the server with --admin-password or --api-key"
# The page loads only its own scripts and talks only to its own server.
PAGE_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}
LOGINS_KEY: Final = web.AppKey("admin_logins", ConnectRate)

T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Action = Callable[[web.Request, Node, Admin], Awaitable[web.Response]]


class Login(msgspec.Struct, frozen=True):
    password: str


class Publish(msgspec.Struct, frozen=True):
    room: str
    data: Raw


class Disconnect(msgspec.Struct, frozen=True):
    session: str


def add_routes(app: web.Application) -> None:
    app[LOGINS_KEY] = ConnectRate(LOGIN_RATE, LOGIN_BURST)
    app.router.add_get("/admin", page)
    app.router.add_post("/admin/login", _action(login, logged_in=False))
    app.router.add_post("/admin/logout", _action(logout, logged_in=False))
    app.router.add_get("/admin/api/session", _action(session, logged_in=False))
    app.router.add_get("/admin/api/token", _action(token))
    app.router.add_get("/admin/api/presence", _action(presence))
    app.router.add_post("/admin/api/publish", _action(publish))
    app.router.add_post("/admin/api/disconnect", _action(disconnect))


async def page(request: web.Request) -> web.StreamResponse:
    """The page (it asks for a login itself), or 403 while the admin page is off."""
    if not request.app[NODE_KEY].admin.enabled:
        text = f"<!doctype html><title>roomcast admin</title><p>403: {OFF}.</p>"
        return web.Response(text=text, status=403, content_type="text/html", headers=PAGE_HEADERS)
    return web.FileResponse(STATIC / "admin.html", headers=PAGE_HEADERS)


def _action(handler: Action, *, logged_in: bool = True) -> Handler:
    """The checks every admin request passes, then ``handler``; errors are JSON."""

    async def checked(request: web.Request) -> web.StreamResponse:
        node = request.app[NODE_KEY]
        admin = node.admin
        try:
            if admin.keys is None:
                raise ProtocolError(ErrorCode.FORBIDDEN, OFF)
            _check_origin(request)
            if logged_in and not admin.keys.valid_cookie(request.cookies.get(COOKIE)):
                raise ProtocolError(ErrorCode.UNAUTHORIZED, "log in to the admin page first")
            return await handler(request, node, admin)
        except Refused as refused:
            return refused.response()
        except ProtocolError as error:
            return error_response(error)

    return checked


def _check_origin(request: web.Request) -> None:
    if HEADER not in request.headers:
        raise ProtocolError(ErrorCode.FORBIDDEN, f"the {HEADER} header is required")
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is not None and not same_origin(origin, request.headers.get(hdrs.HOST)):
        raise ProtocolError(ErrorCode.FORBIDDEN, f"origin {origin!r} may not use the admin API")


async def _body(request: web.Request, kind: type[T]) -> T:
    try:
        raw = await request.read()
        raw.decode("utf-8")  # a message's data is sent on as its bytes: they must be text
        return msgspec.json.decode(raw, type=kind)
    except web.HTTPRequestEntityTooLarge:
        raise ProtocolError(ErrorCode.TOO_LARGE, "the body is too large") from None
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"bad body: {exc}") from None


# -- login --------------------------------------------------------------------------


async def login(request: web.Request, node: Node, admin: Admin) -> web.Response:
    """``{"password": ...}``: 200 and the cookie, 401, or 429 after too many attempts."""
    assert admin.keys is not None
    guard = Guard.of(request.app)
    client = guard.client_key(request) if guard is not None else str(request.remote)
    wait = request.app[LOGINS_KEY].take(client)
    if wait > 0:
        raise Refused(ErrorCode.RATE_LIMITED, "too many login attempts: try again later", wait)
    body = await _body(request, Login)
    if not admin.keys.check_password(body.password):
        raise ProtocolError(ErrorCode.UNAUTHORIZED, "wrong admin password")
    log.info("admin login from %s", client, extra=event("admin_login", client=client))
    response = json_body(encode({"node": node.settings.node_id}))
    _set_cookie(request, response, admin.keys.cookie())
    return response


async def session(request: web.Request, node: Node, admin: Admin) -> web.Response:
    """Whether this browser is logged in (the page asks before it shows the login form)."""
    assert admin.keys is not None
    logged_in = admin.keys.valid_cookie(request.cookies.get(COOKIE))
    return json_body(encode({"logged_in": logged_in, "node": node.settings.node_id}))


async def logout(request: web.Request, node: Node, admin: Admin) -> web.Response:
    response = json_body(encode({"node": node.settings.node_id}))
    response.del_cookie(COOKIE, path="/admin")
    return response


def _set_cookie(request: web.Request, response: web.Response, value: str) -> None:
    response.set_cookie(
        COOKIE, value, path="/admin", max_age=int(COOKIE_TTL), httponly=True,
        samesite="Strict", secure=_over_tls(request),
    )  # fmt: skip


def _over_tls(request: web.Request) -> bool:
    """HTTPS to this node, or to a trusted proxy in front of it (``X-Forwarded-Proto``)."""
    if request.secure:
        return True
    guard = Guard.of(request.app)
    peer = guard.proxies.client(request.remote, ()) if guard is not None else None
    trusted = guard is not None and peer is not None and peer in guard.proxies
    return trusted and request.headers.get("X-Forwarded-Proto", "").lower() == "https"


# -- the page's API -----------------------------------------------------------------


async def token(request: web.Request, node: Node, admin: Admin) -> web.Response:
    """A connection token that lets the page's WebSocket join the admin room; the
    cookie is renewed, so a login lasts while a page stays open."""
    assert admin.keys is not None
    value, expires = admin.keys.connection_token()
    body = {"token": value, "expires": expires, "room": ADMIN_ROOM,
            "node": node.settings.node_id}  # fmt: skip
    response = json_body(encode(body))
    _set_cookie(request, response, admin.keys.cookie())
    return response


async def presence(request: web.Request, node: Node, admin: Admin) -> web.Response:
    """``?room=R``: its members on every node, with their session ids."""
    room = check_room(request.query.get("room", ""))
    return json_body(encode({"room": room, "members": await node.presence(room)}))


async def publish(request: web.Request, node: Node, admin: Admin) -> web.Response:
    """``{"room": R, "data": D}``: published as the HTTP API does (no sender)."""
    body = await _body(request, Publish)
    room = check_room(body.room)
    if room.startswith(RESERVED):
        raise ProtocolError(ErrorCode.FORBIDDEN, f"{RESERVED}* rooms are roomcast's own")
    limit = node.settings.max_data_size
    if len(body.data) > limit:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"data is larger than {limit} bytes")
    try:
        pub = await node.publish(room, body.data, None)
    except BrokerError as exc:
        raise ProtocolError(ErrorCode.UNAVAILABLE, f"not published: {exc}") from None
    return json_body(encode({"room": pub.room, "epoch": pub.epoch, "offset": pub.offset}))


async def disconnect(request: web.Request, node: Node, admin: Admin) -> web.Response:
    """``{"session": ID}``: the node that closed it (4004), or 404 if no node has it."""
    session = (await _body(request, Disconnect)).session
    if not 1 <= len(session) <= MAX_SESSION_ID:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"session must be 1-{MAX_SESSION_ID} characters")
    try:
        closed_by = await admin.disconnect(session)
    except BrokerError as exc:
        raise ProtocolError(ErrorCode.UNAVAILABLE, f"not sent to the cluster: {exc}") from None
    if closed_by is None:
        missing = ProtocolError("not_found", f"no node has session {session!r}")
        return json_body(encode_error(missing), 404)
    return json_body(encode({"session": session, "node": closed_by}))

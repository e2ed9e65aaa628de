"""The HTTP API for backends: publish into a room, read its history and presence.

Every route needs ``Authorization: Bearer <api key>``; without a configured key the
API is off and answers 403. Errors are JSON: ``{"type":"error","code":...,"message":...}``.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import web
from msgspec import Raw, Struct

from roomcast.auth import RESERVED
from roomcast.exceptions import BrokerError, ErrorCode, ProtocolError
from roomcast.http import openapi
from roomcast.http.errors import error_response, json_body
from roomcast.node import Node
from roomcast.protocol import DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT, TOO_DEEP, check_room, encode
from roomcast.transports.websocket import NODE_KEY

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

INTEGER = re.compile(r"[+-]?[0-9]+")


class PublishBody(Struct, frozen=True):
    room: str
    data: Raw


_publish_decoder = msgspec.json.Decoder(PublishBody)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/api/publish", _guarded(publish))
    app.router.add_get("/api/rooms/{room}/history", _guarded(history))
    app.router.add_get("/api/rooms/{room}/presence", _guarded(presence))
    app.router.add_get(openapi.PATH, openapi.serve)


def _guarded(handler: Callable[[web.Request, Node], Awaitable[web.Response]]) -> Handler:
    """Check the API key, then turn every ProtocolError into its JSON answer."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        node = request.app[NODE_KEY]
        try:
            authorize(node.settings.api_key, request.headers.get("Authorization", ""))
            return await handler(request, node)
        except ProtocolError as error:
            return error_response(error)

    return guarded


def authorize(api_key: str | None, header: str) -> None:
    if api_key is None:
        raise ProtocolError(ErrorCode.FORBIDDEN, "the HTTP API is off: start with --api-key")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        token.strip().encode(), api_key.encode()
    ):
        raise ProtocolError(ErrorCode.UNAUTHORIZED, "missing or wrong API key")


async def publish(request: web.Request, node: Node) -> web.Response:
    settings = node.settings
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ProtocolError(
            ErrorCode.TOO_LARGE, f"the body is larger than {settings.max_message_size} bytes"
        ) from None
    body = _decode_body(raw)
    check_room(body.room)
    if body.room.startswith(RESERVED):
        raise ProtocolError(ErrorCode.FORBIDDEN, f"{RESERVED}* rooms are the server's own")
    if len(body.data) > settings.max_data_size:
        raise ProtocolError(
            ErrorCode.TOO_LARGE, f"data is larger than {settings.max_data_size} bytes"
        )
    try:
        pub = await node.publish(body.room, body.data, None)
    except BrokerError as exc:
        raise ProtocolError(ErrorCode.UNAVAILABLE, f"not published: {exc}") from None
    return json_body(encode({"room": pub.room, "epoch": pub.epoch, "offset": pub.offset}))


def _decode_body(raw: bytes) -> PublishBody:
    try:
        # `data` is kept as its bytes, unchecked: they must be UTF-8 to be sent on as text.
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"the body is not UTF-8: {exc}") from None
    try:
        return _publish_decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"bad body: {exc}") from None
    except RecursionError:
        raise ProtocolError(ErrorCode.BAD_REQUEST, TOO_DEEP) from None


async def history(request: web.Request, node: Node) -> web.Response:
    room = check_room(request.match_info["room"])
    limit = _int_param(request, "limit") or DEFAULT_HISTORY_LIMIT
    before = _int_param(request, "before")
    reply = await node.history(room, min(limit, MAX_HISTORY_LIMIT), before)
    body = {"room": room, "epoch": reply.epoch, "offset": reply.offset, "messages": reply.messages}
    return json_body(encode(body))


async def presence(request: web.Request, node: Node) -> web.Response:
    room = check_room(request.match_info["room"])
    return json_body(encode({"room": room, "members": await node.presence(room)}))


def _int_param(request: web.Request, name: str) -> int | None:
    """A query parameter that must be an integer from 1 to 2**63-1, if present."""
    value = request.query.get(name)
    if value is None:
        return None
    try:
        if INTEGER.fullmatch(value) is None:
            raise ValueError(value)
        number = int(value)
    except ValueError:  # not ASCII digits, or more digits than Python converts
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{name} must be an integer") from None
    top = openapi.MAX_INTEGER
    if not 1 <= number <= top:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"{name} must be from 1 to {top}")
    return number

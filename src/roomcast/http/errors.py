"""JSON error answers for HTTP routes: the same shape as the protocol's ``error`` frame."""

from __future__ import annotations

from aiohttp import web

from roomcast.exceptions import ErrorCode, ProtocolError
from roomcast.protocol import encode_error

STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.INVALID_ROOM: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.CURSOR_EXPIRED: 409,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.UNAVAILABLE: 503,
}


def json_body(payload: bytes, status: int = 200) -> web.Response:
    return web.Response(body=payload, status=status, content_type="application/json")


def error_response(error: ProtocolError) -> web.Response:
    response = json_body(encode_error(error), STATUS.get(error.code, 400))
    if error.code in {ErrorCode.UNAUTHORIZED, ErrorCode.TOKEN_EXPIRED}:
        response.headers["WWW-Authenticate"] = 'Bearer realm="roomcast"'
    return response

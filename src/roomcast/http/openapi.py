"""The OpenAPI 3.1 document of the HTTP API, served at ``GET /api/openapi.json``.

It describes the routes of :mod:`roomcast.http.api` (publish, history, presence) and the
health checks of :mod:`roomcast.http.pages`: every parameter, body, status and error. The
tests run schemathesis against a real server with it (tests/http/test_openapi.py), so the
document and the code cannot drift apart unnoticed.
"""

from __future__ import annotations

import functools
from typing import Any, Final

from aiohttp import web

from roomcast.exceptions import ErrorCode
from roomcast.http.errors import json_body
from roomcast.protocol import DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT, ROOM_PATTERN, encode

PATH: Final = "/api/openapi.json"
MAX_INTEGER: Final = 2**63 - 1  # the largest `limit` or `before` (what SQLite stores)

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict[str, Schema], description: str = "") -> Schema:
    """An object schema whose properties are all required (servers may add new ones)."""
    schema: Schema = {"type": "object", "required": list(properties), "properties": properties}
    if description:
        schema["description"] = description
    return schema


def error_codes() -> list[str]:
    codes = vars(ErrorCode).items()
    return sorted(value for name, value in codes if name.isupper() and isinstance(value, str))


def schemas() -> dict[str, Schema]:
    room: Schema = {
        "type": "string",
        "pattern": f"^{ROOM_PATTERN.pattern}$",
        "minLength": 1,
        "maxLength": 128,
        "description": "A room name: 1-128 characters of A-Za-z0-9_.:@-",
    }
    member = obj({"session": {"type": "string"}, "user": {"type": "string"}})
    epoch: Schema = {"type": "string", "description": "The room's epoch (see docs/protocol.md)"}
    offset: Schema = {"type": "integer", "minimum": 0}
    message = obj(
        {
            "type": {"type": "string", "enum": ["message"]},
            "room": ref("Room"),
            "epoch": epoch,
            "offset": {"type": "integer", "minimum": 1},
            "data": {"description": "Any JSON value, as published"},
            "from": {"oneOf": [ref("Member"), {"type": "null"}]},
            "ts": {"type": "integer", "description": "Unix milliseconds of the publish"},
        },
        "A stored message, in the same shape as the protocol's `message` event",
    )
    return {
        "Room": room,
        "Member": member,
        "Message": message,
        "Error": obj(
            {
                "type": {"type": "string", "enum": ["error"]},
                "code": {"type": "string", "enum": error_codes()},
                "message": {"type": "string"},
            },
            "Every error answer: the protocol's `error` frame, without an `id`",
        ),
        "PublishRequest": obj(
            {"room": ref("Room"), "data": {"description": "Any JSON value"}},
            "The message to publish; `data` may be at most --max-data-size bytes",
        ),
        "Published": obj({"room": ref("Room"), "epoch": epoch, "offset": offset}),
        "HistoryPage": obj(
            {
                "room": ref("Room"),
                "epoch": epoch,
                "offset": {**offset, "description": "The room's newest offset (0: none yet)"},
                "messages": {"type": "array", "items": ref("Message")},
            }
        ),
        "PresenceList": obj(
            {"room": ref("Room"), "members": {"type": "array", "items": ref("Member")}}
        ),
        "Health": obj({"status": {"type": "string", "enum": ["ok"]}}),
        "Readiness": obj(
            {
                "status": {
                    "type": "string",
                    "enum": ["starting", "ready", "draining", "stopped"],
                },
                "node": {"type": "string", "description": "This node's id"},
                "broker": {"type": "boolean", "description": "Whether the broker is reachable"},
            }
        ),
    }


def json_content(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def responses() -> dict[str, Schema]:
    """The error answers, shared by the operations."""

    def error(description: str, **extra: Any) -> Schema:
        return {"description": description, "content": json_content(ref("Error")), **extra}

    challenge = {"WWW-Authenticate": {"schema": {"type": "string", "pattern": "^Bearer "}}}
    return {
        "BadRequest": error("A bad parameter or body (`bad_request`, `invalid_room`)"),
        "Unauthorized": error(
            "No `Authorization: Bearer KEY` header, or a wrong key", headers=challenge
        ),
        "Forbidden": error("The HTTP API is off: the server was started without --api-key"),
        "TooLarge": error(
            "The body is larger than --max-message-size, or `data` than --max-data-size"
        ),
        "Unavailable": error("The server cannot do it now (shutting down, broker failing)"),
    }


def answers(ok: str, description: str, *errors: str) -> dict[str, Schema]:
    codes = {"BadRequest": "400", "Unauthorized": "401", "Forbidden": "403",
             "TooLarge": "413", "Unavailable": "503"}  # fmt: skip
    success = {"description": description, "content": json_content(ref(ok))}
    result: dict[str, Schema] = {"200": success}
    for name in errors:
        result[codes[name]] = {"$ref": f"#/components/responses/{name}"}
    return result


def published(result: dict[str, Schema]) -> dict[str, Schema]:
    """Links from a publish to the history and presence of its room (for stateful tests)."""
    room = {"room": "$response.body#/room"}
    result["200"]["links"] = {
        "RoomHistory": {"operationId": "history", "parameters": {
            **room, "before": "$response.body#/offset"}},
        "RoomPresence": {"operationId": "presence", "parameters": room},
    }  # fmt: skip
    return result


ROOM_PARAMETER: Final[Schema] = {
    "name": "room", "in": "path", "required": True, "schema": {"$ref": "#/components/schemas/Room"},
}  # fmt: skip


def paths() -> dict[str, Schema]:
    errors = ("BadRequest", "Unauthorized", "Forbidden", "Unavailable")
    return {
        "/api/publish": {"post": {
            "operationId": "publish",
            "summary": "Publish a message into a room (its `from` is null)",
            "description": "Answered once the message is stored and fanned out to the "
                           "room's members. Allowed in rooms where clients may not publish.",
            "requestBody": {"required": True, "content": json_content(ref("PublishRequest"))},
            "responses": published(answers("Published", "Stored: the message's position",
                                           *errors, "TooLarge")),
        }},
        "/api/rooms/{room}/history": {"get": {
            "operationId": "history",
            "summary": "The newest messages of a room, oldest first",
            "parameters": [ROOM_PARAMETER, *history_parameters()],
            "responses": answers("HistoryPage", "A page of history", *errors),
        }},
        "/api/rooms/{room}/presence": {"get": {
            "operationId": "presence",
            "summary": "The members of a room, on every node",
            "parameters": [ROOM_PARAMETER],
            "responses": answers("PresenceList", "The members", *errors),
        }},
        PATH: {"get": {
            "operationId": "openapi",
            "summary": "This document",
            "security": [],
            "responses": {"200": {"description": "The OpenAPI document",
                                  "content": json_content({"type": "object"})}},
        }},
        "/health": {"get": {
            "operationId": "health",
            "summary": "Liveness: 200 while the process runs",
            "security": [],
            "responses": {"200": {"description": "Alive", "content": json_content(ref("Health"))}},
        }},
        "/ready": {"get": {
            "operationId": "ready",
            "summary": "Readiness: 200 only while the node accepts connections",
            "security": [],
            "responses": {
                "200": {"description": "Ready", "content": json_content(ref("Readiness"))},
                "503": {"description": "Starting, draining, or the broker is unreachable",
                        "content": json_content(ref("Readiness"))},
            },
        }},
    }  # fmt: skip


POSITIVE_INT64: Final[Schema] = {
    "type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_INTEGER,
}  # fmt: skip


def history_parameters() -> list[Schema]:
    return [
        {
            "name": "limit",
            "in": "query",
            "description": f"How many messages (default {DEFAULT_HISTORY_LIMIT}; "
            f"more than {MAX_HISTORY_LIMIT} is capped at {MAX_HISTORY_LIMIT})",
            "schema": POSITIVE_INT64,
        },
        {
            "name": "before",
            "in": "query",
            "description": "Only messages with an offset below this one",
            "schema": POSITIVE_INT64,
        },
    ]


@functools.cache
def document() -> bytes:
    """The whole document, encoded once."""
    spec = {
        "openapi": "3.1.0",
        "info": {
            "title": "roomcast HTTP API",
            "version": "1",
            "description": "Publish into rooms, read their history and presence. Every "
            "/api route but this document needs `Authorization: Bearer <--api-key>`; "
            'errors are `{"type":"error","code":...,"message":...}` (docs/protocol.md).',
        },
        "security": [{"apiKey": []}],
        "paths": paths(),
        "components": {
            "schemas": schemas(),
            "responses": responses(),
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The key given to `roomcast serve --api-key`",
                }
            },
        },
    }
    return encode(spec)


async def serve(request: web.Request) -> web.Response:
    """``GET /api/openapi.json``: no key needed."""
    return json_body(document())

"""The HTTP API against a real server: publish, history, presence, keys, errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from conftest import ServerFactory, WsClient

from roomcast.testing import ServerProcess

Connect = Callable[..., Any]
AUTH = {"Authorization": "Bearer test-key"}


async def call(
    method: str, url: str, *, headers: dict[str, str] | None = None, body: Any = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http:
        data = raw if raw is not None else (None if body is None else json.dumps(body))
        async with http.request(method, url, headers=headers, data=data) as answer:
            return answer.status, await answer.json()


async def test_publish_reaches_members_with_from_null(
    server: ServerProcess, ws_connect: Connect
) -> None:
    member: WsClient = await ws_connect(server.ws_url + "?name=m")
    epoch = (await member.request(type="join", room="feed", id=1))["epoch"]
    status, answer = await call(
        "POST", server.http_url + "/api/publish", headers=AUTH,
        body={"room": "feed", "data": {"price": 101.5}},
    )  # fmt: skip
    assert (status, answer) == (200, {"room": "feed", "epoch": epoch, "offset": 1})
    message = await member.recv()
    assert message == {
        "type": "message", "room": "feed", "epoch": epoch, "offset": 1,
        "data": {"price": 101.5}, "from": None, "ts": message["ts"],
    }  # fmt: skip
    status, history = await call(
        "GET", server.http_url + "/api/rooms/feed/history?limit=5", headers=AUTH
    )
    assert (status, history) == (
        200, {"room": "feed", "epoch": epoch, "offset": 1, "messages": [message]}
    )  # fmt: skip
    status, presence = await call(
        "GET", server.http_url + "/api/rooms/feed/presence", headers=AUTH
    )
    assert (status, presence) == (
        200, {"room": "feed", "members": [{"session": member.welcome["session"], "user": "m"}]}
    )  # fmt: skip


async def test_history_pages_with_before_and_limit(server: ServerProcess) -> None:
    for n in range(1, 8):
        await call("POST", server.http_url + "/api/publish", headers=AUTH,
                   body={"room": "h", "data": n})  # fmt: skip
    _, page = await call(
        "GET", server.http_url + "/api/rooms/h/history?limit=3&before=6", headers=AUTH
    )
    assert [m["data"] for m in page["messages"]] == [3, 4, 5]
    assert page["offset"] == 7


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [({}, 401, "unauthorized"), ({"Authorization": "Bearer nope"}, 401, "unauthorized"),
     ({"Authorization": "Basic test-key"}, 401, "unauthorized")],
)  # fmt: skip
async def test_a_missing_or_wrong_key_is_refused(
    server: ServerProcess, headers: dict[str, str], status: int, code: str
) -> None:
    for method, path in [("POST", "/api/publish"), ("GET", "/api/rooms/r/history"),
                         ("GET", "/api/rooms/r/presence")]:  # fmt: skip
        got, answer = await call(method, server.http_url + path, headers=headers,
                                 body={"room": "r", "data": 1})  # fmt: skip
        assert (got, answer["type"], answer["code"]) == (status, "error", code)


async def test_without_a_configured_key_the_api_is_off(server_factory: ServerFactory) -> None:
    server = server_factory("--history", "memory")
    status, answer = await call(
        "POST", server.http_url + "/api/publish", headers=AUTH, body={"room": "r", "data": 1}
    )
    assert (status, answer["code"]) == (403, "forbidden")


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"{", 400, "bad_request"),
        (b'{"room":"r"}', 400, "bad_request"),
        (b'{"room":1,"data":1}', 400, "bad_request"),
        (b'{"room":"bad room","data":1}', 400, "invalid_room"),
        (b'{"room":"r","data":"' + b"x" * 40_000 + b'"}', 413, "too_large"),
        (b'{"room":"r","data":"' + b"x" * 70_000 + b'"}', 413, "too_large"),
    ],
)
async def test_bad_publish_bodies_get_json_errors(
    server: ServerProcess, raw: bytes, status: int, code: str
) -> None:
    got, answer = await call("POST", server.http_url + "/api/publish", headers=AUTH, raw=raw)
    assert (got, answer["code"]) == (status, code)


async def test_bad_history_queries_get_json_errors(server: ServerProcess) -> None:
    base = server.http_url + "/api/rooms"
    assert (await call("GET", base + "/r/history?limit=x", headers=AUTH))[0] == 400
    assert (await call("GET", base + "/r/history?limit=0", headers=AUTH))[0] == 400
    status, answer = await call("GET", base + "/bad%20room/history", headers=AUTH)
    assert (status, answer["code"]) == (400, "invalid_room")


async def test_health_and_ready(server: ServerProcess) -> None:
    assert await call("GET", server.http_url + "/health") == (200, {"status": "ok"})
    status, answer = await call("GET", server.http_url + "/ready")
    assert (status, answer["status"]) == (200, "ready")


async def test_the_servers_own_rooms_take_no_publish_from_the_api(server: ServerProcess) -> None:
    for room in ("roomcast:admin", "roomcast:control", "roomcast:other"):
        status, answer = await call("POST", server.http_url + "/api/publish", headers=AUTH,
                                    body={"room": room, "data": {"fake": "stats"}})  # fmt: skip
        assert (status, answer["code"]) == (403, "forbidden")
    status, _ = await call("POST", server.http_url + "/api/publish", headers=AUTH,
                           body={"room": "roomcast-not-reserved", "data": 1})  # fmt: skip
    assert status == 200

"""POST /send against a real server: every command, new tokens on join/leave, errors."""

from __future__ import annotations

from typing import Any

import aiohttp
from conftest import ServerFactory, WsClient
from oneway_client import OneWay

from roomcast.testing import ServerProcess


async def session_in(client: OneWay, rooms: str, name: str = "sam") -> tuple[str, str]:
    """A new long-poll session: (token, session id)."""
    status, answer = await client.poll(rooms=rooms, name=name)
    assert status == 200
    return answer["session"], answer["events"][0]["session"]


async def test_publish_presence_history_and_ping(oneway: OneWay) -> None:
    token, sid = await session_in(oneway, "r")
    status, ok = await oneway.send(token, {"type": "publish", "room": "r", "data": [1], "id": "a"})
    assert (status, ok["type"], ok["id"], ok["room"], ok["offset"]) == (200, "ok", "a", "r", 1)
    status, ok = await oneway.send(token, {"type": "presence", "room": "r", "id": 2})
    assert (status, ok["members"]) == (200, [{"session": sid, "user": "sam"}])
    status, ok = await oneway.send(token, {"type": "history", "room": "r", "id": 3})
    assert status == 200
    assert [(m["offset"], m["data"], m["from"]) for m in ok["messages"]] == [
        (1, [1], {"session": sid, "user": "sam"})
    ]  # fmt: skip
    assert await oneway.send(token, {"type": "ping", "id": 4}) == (200, {"type": "pong", "id": 4})


async def test_join_and_leave_answer_with_a_new_token(
    server: ServerProcess, oneway: OneWay, ws_connect: Any
) -> None:
    token, sid = await session_in(oneway, "a")
    await oneway.publish("b", "before")
    command = {"type": "publish", "room": "b", "data": 1, "id": 1}
    status, error = await oneway.send(token, command)
    assert (status, error["code"]) == (400, "not_joined")
    status, ok = await oneway.send(token, {"type": "join", "room": "b", "id": 2})
    assert (status, ok["room"], ok["offset"]) == (200, "b", 1)
    joined_token = ok["session"]
    status, published = await oneway.send(joined_token, command)
    assert (status, published["offset"]) == (200, 2)
    # the next poll with the new token reads room b from the ok's offset
    cursor = f"b~{ok['epoch']}~{ok['offset']}"
    status, answer = await oneway.poll(session=joined_token, cursor=cursor, timeout=0)
    assert [(e["room"], e["offset"]) for e in answer["events"]] == [("b", 2)]
    assert sorted(answer["cursor"].split(",")) == [f"a~{ok['epoch']}~0", f"b~{ok['epoch']}~2"]
    watcher: WsClient = await ws_connect(server.ws_url)
    await watcher.request(type="join", room="b", id=1)
    status, ok = await oneway.send(joined_token, {"type": "leave", "room": "b", "id": 3})
    assert (status, ok["type"], ok["room"]) == (200, "ok", "b")
    assert await watcher.until("left") == {
        "type": "left", "room": "b", "member": {"session": sid, "user": "sam"}
    }  # fmt: skip
    status, error = await oneway.send(ok["session"], command)
    assert (status, error["code"]) == (400, "not_joined")


async def test_bad_sends_get_clear_errors(server_factory: ServerFactory) -> None:
    server = server_factory(
        "--history", "memory", "--max-message-size", "300", "--publish-rate", "1",
        "--publish-burst", "2", "--max-rooms", "1",
    )  # fmt: skip
    async with aiohttp.ClientSession() as http:
        client = OneWay(http, server.http_url)
        token, _ = await session_in(client, "r")
        publish = {"type": "publish", "room": "r", "data": 1}
        cases: list[tuple[str | None, Any, int, str]] = [
            (None, publish, 401, "unauthorized"),
            (token[:-2] + "xx", publish, 401, "unauthorized"),
            ("garbage", publish, 401, "unauthorized"),
            (token, b"{not json", 400, "bad_request"),
            (token, {"type": "shout"}, 400, "unknown_type"),
            (token, {"type": "publish", "room": "r", "data": "x" * 400}, 413, "too_large"),
            (token, {"type": "join", "room": "two", "id": 1}, 429, "rate_limited"),
            (token, {"type": "join", "room": "bad room", "id": 1}, 400, "invalid_room"),
        ]
        for session, body, status, code in cases:
            got_status, error = await client.send(session, body)
            assert (got_status, error["type"], error["code"]) == (status, "error", code), body
        statuses = [(await client.send(token, publish))[0] for _ in range(3)]
        assert statuses == [200, 200, 429]  # a burst of 2, then the rate of 1/s

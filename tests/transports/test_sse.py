"""GET /sse against a real server: events, cursors, replay, heartbeats, presence, errors."""

from __future__ import annotations

import signal
from typing import Any

from conftest import ServerFactory, WsClient
from oneway_client import OneWay, SseStream

from roomcast.testing import ServerProcess


async def opened(client: OneWay, rooms: str, **params: str) -> tuple[SseStream, dict[str, Any]]:
    """A stream past its welcome and its rooms' ``ok``s; (stream, welcome)."""
    stream = await client.sse(rooms=rooms, **params)
    welcome = (await stream.next()).data
    for _ in rooms.split(","):
        assert (await stream.next()).event == "ok"
    return stream, welcome


async def test_a_stream_starts_with_welcome_and_oks_then_carries_messages(
    oneway: OneWay,
) -> None:
    stream = await oneway.sse(rooms="a,b", name="sue")
    assert stream.response.status == 200
    assert stream.headers["Content-Type"] == "text/event-stream"
    assert stream.headers["Cache-Control"] == "no-cache"
    assert stream.headers["X-Accel-Buffering"] == "no"
    welcome = await stream.next()
    assert welcome.event == "welcome"
    assert sorted(welcome.data) == ["heartbeat", "node", "session", "token", "type"]
    ok_a, ok_b = await stream.next(), await stream.next()
    epoch = ok_a.data["epoch"]
    assert (ok_a.event, ok_a.data) == (
        "ok",
        {"type": "ok", "room": "a", "epoch": epoch, "offset": 0},
    )
    assert ok_b.data == {"type": "ok", "room": "b", "epoch": epoch, "offset": 0}
    assert ok_b.id == f"a~{epoch}~0,b~{epoch}~0"
    assert await oneway.publish("b", {"n": 1}) == 1
    message = await stream.next()
    assert (message.event, message.id) == ("message", f"a~{epoch}~0,b~{epoch}~1")
    assert message.data["data"] == {"n": 1}
    assert (message.data["room"], message.data["offset"], message.data["from"]) == ("b", 1, None)


async def test_last_event_id_replays_exactly_what_was_missed(oneway: OneWay) -> None:
    stream, _ = await opened(oneway, "r")
    for n in range(1, 4):
        await oneway.publish("r", n)
    first = await stream.next()
    assert first.data["offset"] == 1
    stream.close()  # the browser lost the stream after message 1
    for n in range(4, 6):
        await oneway.publish("r", n)
    again = await oneway.sse(rooms="r", last_event_id=first.id or "")
    assert (await again.next()).event == "welcome"
    replayed = [await again.next() for _ in range(4)]
    assert [e.data["data"] for e in replayed] == [2, 3, 4, 5]
    epoch = first.data["epoch"]
    assert [e.id for e in replayed] == [f"r~{epoch}~{n}" for n in range(2, 6)]
    ok = await again.next()
    assert ok.data == {"type": "ok", "room": "r", "epoch": epoch, "offset": 5, "recovered": True}
    await oneway.publish("r", 6)
    assert (await again.next()).data["offset"] == 6  # then live, nothing twice


async def test_cursor_parameter_resumes_each_room_on_its_own(oneway: OneWay) -> None:
    for room, count in (("x", 3), ("y", 2)):
        for n in range(count):
            await oneway.publish(room, n)
    epoch = (await oneway.poll(rooms="x"))[1]["cursor"].split("~")[1]
    stream = await oneway.sse(rooms="x,y", cursor=f"x~{epoch}~2,y~{epoch}~0")
    events = [await stream.next() for _ in range(6)]
    assert [e.event for e in events] == ["welcome", "message", "ok", "message", "message", "ok"]
    assert [(e.data["room"], e.data["offset"]) for e in events[1:]] == [
        ("x", 3), ("x", 3), ("y", 1), ("y", 2), ("y", 2)
    ]  # fmt: skip
    assert events[-1].id == f"x~{epoch}~3,y~{epoch}~2"


async def test_bad_requests_get_json_errors_never_a_500(server_factory: ServerFactory) -> None:
    import aiohttp

    server = server_factory("--history", "memory", "--max-rooms", "2")
    async with aiohttp.ClientSession() as http:
        client = OneWay(http, server.http_url)
        cases: list[tuple[dict[str, str], int, str]] = [
            ({}, 400, "bad_request"),
            ({"rooms": "a,b,c"}, 400, "bad_request"),
            ({"rooms": "no spaces"}, 400, "invalid_room"),
            ({"rooms": "a", "cursor": "garbage"}, 400, "bad_request"),
            ({"rooms": "a", "cursor": "a~e~x"}, 400, "bad_request"),
            ({"session": "forged.token.here"}, 401, "unauthorized"),
        ]
        for params, status, code in cases:
            got_status, body = await client.sse_error(**params)
            assert (got_status, body["type"], body["code"]) == (status, "error", code), params
        status, body = await client.sse_error(rooms="a", cursor="a~0badepoc~3")
        assert (status, body["code"]) == (409, "cursor_expired")
        epoch = body["cursor"].split("~")[1]
        assert body["cursor"] == f"a~{epoch}~0"


async def test_heartbeat_comments_keep_an_idle_stream_open(
    server_factory: ServerFactory,
) -> None:
    import aiohttp

    server = server_factory("--history", "memory", "--heartbeat", "0.3")
    async with aiohttp.ClientSession() as http:
        client = OneWay(http, server.http_url)
        stream, _ = await opened(client, "idle")
        for _ in range(4):  # well past two heartbeats: no pong is asked of an SSE client
            await stream.comment()
        assert not stream.response.content.at_eof()
        client.close()


async def test_stream_members_are_in_presence_and_leave_when_the_stream_ends(
    server: ServerProcess, oneway: OneWay, ws_connect: Any
) -> None:
    watcher: WsClient = await ws_connect(server.ws_url + "?name=watcher")
    await watcher.request(type="join", room="p", id=1)
    stream, welcome = await opened(oneway, "p", name="sse-user")
    member = {"session": welcome["session"], "user": "sse-user"}
    assert await watcher.until("joined") == {"type": "joined", "room": "p", "member": member}
    reply = await watcher.request(type="presence", room="p", id=2)
    assert sorted(m["user"] for m in reply["members"]) == ["sse-user", "watcher"]
    stream.close()
    assert await watcher.until("left") == {"type": "left", "room": "p", "member": member}


async def test_sse_and_websocket_clients_talk_both_ways(
    server: ServerProcess, oneway: OneWay, ws_connect: Any
) -> None:
    ws: WsClient = await ws_connect(server.ws_url + "?name=ws")
    await ws.request(type="join", room="chat", id=1)
    stream, welcome = await opened(oneway, "chat", name="sse")
    status, ok = await oneway.send(
        welcome["token"], {"type": "publish", "room": "chat", "data": "from sse", "id": 5}
    )
    assert (status, ok["type"], ok["id"], ok["offset"]) == (200, "ok", 5, 1)
    heard = await ws.until("message")
    assert (heard["data"], heard["from"]["user"], heard["offset"]) == ("from sse", "sse", 1)
    assert (await stream.until("message")).data["offset"] == 1  # its own message too
    await ws.request(type="publish", room="chat", data="from ws", id=6)
    back = await stream.until("message")
    assert (back.data["data"], back.data["from"]["user"], back.data["offset"]) == (
        "from ws",
        "ws",
        2,
    )


async def test_shutdown_ends_the_stream(server: ServerProcess, oneway: OneWay) -> None:
    stream, _ = await opened(oneway, "r")
    server.stop(signal.SIGTERM)
    assert await stream.ended()


async def test_members_with_different_cursors_each_get_their_own_ids(oneway: OneWay) -> None:
    await oneway.publish("y", "y1")
    one, _ = await opened(oneway, "x")
    same, _ = await opened(oneway, "x")
    both, _ = await opened(oneway, "x,y")
    epoch = (await oneway.poll(rooms="x"))[1]["cursor"].split("~")[1]
    for n in (1, 2):
        await oneway.publish("x", n)
        ids = [(await stream.until("message")).id for stream in (one, same, both)]
        assert ids == [f"x~{epoch}~{n}", f"x~{epoch}~{n}", f"x~{epoch}~{n},y~{epoch}~1"]

"""Long polling and SSE through nginx and HAProxy (HTTP mode), which balance every request
on its own: each poll, POST /send and stream may land on the other node, with nothing
lost or repeated, since the client carries its session token and cursor."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from .helpers import (
    NODES,
    POLL_WAIT,
    Proxied,
    api_publish,
    new_room,
    open_sse,
    poll,
    send,
    started,
    without_ts,
)

MESSAGES = 40


def epoch_of(cursor: str, room: str) -> str:
    name, epoch, offset = cursor.split("~")
    assert (name, offset) == (room, "0")
    return epoch


async def test_long_polls_bounce_between_nodes_and_lose_nothing(
    l7_proxy: Proxied, http: aiohttp.ClientSession
) -> None:
    base, room = l7_proxy.url, new_room()
    reader = await poll(http, base, rooms=room, name="reader")
    writer = await poll(http, base, rooms=room, name="writer")
    nodes = [reader["node"], writer["node"]]
    for first in (reader, writer):
        assert [event["type"] for event in first["events"]] == ["welcome"]
    epoch = epoch_of(reader["cursor"], room)
    writer_member = {"session": writer["events"][0]["session"], "user": "writer"}

    async def write() -> None:
        token = writer["session"]  # signed by one node, good on both (the same --secret)
        for n in range(1, MESSAGES + 1):
            command = {"type": "publish", "room": room, "data": {"n": n}, "id": n}
            status, reply = await send(http, base, token, command)
            assert (status, reply) == (
                200, {"type": "ok", "id": n, "room": room, "epoch": epoch, "offset": n}
            )  # fmt: skip

    async def read() -> list[dict[str, Any]]:
        token, cursor = reader["session"], reader["cursor"]
        messages: list[dict[str, Any]] = []
        while len(messages) < MESSAGES:
            answer = await poll(http, base, session=token, cursor=cursor, timeout=POLL_WAIT)
            nodes.append(answer["node"])
            token, cursor = answer["session"], answer["cursor"]
            for event in answer["events"]:
                if event["type"] == "message":
                    messages.append(event)
                else:  # the writer's first poll made it a member of the room
                    assert event == {"type": "joined", "room": room, "member": writer_member}
            if messages:
                assert cursor == f"{room}~{epoch}~{messages[-1]['offset']}"
        return messages

    async with asyncio.timeout(60):
        messages, _ = await asyncio.gather(read(), write())
    assert [m["offset"] for m in messages] == list(range(1, MESSAGES + 1))  # once each, in order
    assert [without_ts(m) for m in messages] == [
        {"type": "message", "room": room, "epoch": epoch, "offset": n, "data": {"n": n},
         "from": writer_member}
        for n in range(1, MESSAGES + 1)
    ]  # fmt: skip
    assert set(nodes) == set(NODES), nodes  # the polls did land on both nodes


def api_message(room: str, epoch: str, offset: int) -> dict[str, Any]:
    return {"type": "message", "room": room, "epoch": epoch, "offset": offset,
            "data": {"n": offset}, "from": None}  # fmt: skip


async def test_sse_is_live_through_the_proxy_and_resumes_on_the_other_node(
    l7_proxy: Proxied, http: aiohttp.ClientSession
) -> None:
    base, room = l7_proxy.url, new_room()
    stream = await open_sse(http, base, rooms=room, name="sue")
    welcome, epoch = await started(stream, room)
    # Live: each message is published after the stream opened, and read from the open
    # stream before the next one is published. A proxy that buffered the stream would
    # sit on the event (a few hundred bytes) and this would time out.
    for offset in (1, 2, 3):
        assert await api_publish(http, base, room, {"n": offset}) == offset
        event = await stream.next(timeout=10)
        assert (event.event, event.id) == ("message", f"{room}~{epoch}~{offset}")
        assert without_ts(event.data) == api_message(room, epoch, offset)
    last_id = event.id
    stream.close()  # the connection is lost after message 3
    for offset in (4, 5, 6, 7):
        assert await api_publish(http, base, room, {"n": offset}) == offset

    # EventSource reconnects with Last-Event-ID; retry until it lands on the other node.
    for _ in range(6):
        again = await open_sse(http, base, last_event_id=last_id, rooms=room, name="sue")
        first = await again.next()
        assert first.event == "welcome"
        if first.data["node"] != welcome["node"]:
            break
        again.close()
    else:
        raise AssertionError(f"six streams through {l7_proxy.kind} all on {welcome['node']}")
    replayed = [await again.next() for _ in range(4)]
    assert [(e.event, e.id) for e in replayed] == [
        ("message", f"{room}~{epoch}~{offset}") for offset in (4, 5, 6, 7)
    ]
    assert [without_ts(e.data) for e in replayed] == [
        api_message(room, epoch, offset) for offset in (4, 5, 6, 7)
    ]
    ok = await again.next()
    assert (ok.event, ok.id) == ("ok", f"{room}~{epoch}~7")
    assert ok.data == {"type": "ok", "room": room, "epoch": epoch, "offset": 7, "recovered": True}
    assert await api_publish(http, base, room, {"n": 8}) == 8
    live = await again.next()  # then live again, nothing twice
    assert (live.event, live.id) == ("message", f"{room}~{epoch}~8")
    assert without_ts(live.data) == api_message(room, epoch, 8)
    again.close()

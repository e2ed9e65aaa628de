"""GET /poll against a real server: cursors, waiting, limits, presence, errors."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from conftest import ServerFactory, WsClient
from oneway_client import OneWay

from roomcast.http.app import create_app
from roomcast.node import Node


async def first_poll(client: OneWay, rooms: str, **params: Any) -> dict[str, Any]:
    status, answer = await client.poll(rooms=rooms, **params)
    assert status == 200, answer
    return answer


async def test_the_first_poll_answers_at_once_with_welcome_and_positions(
    oneway: OneWay,
) -> None:
    await oneway.publish("b", "old")
    answer = await first_poll(oneway, "a,b", name="pat")
    assert sorted(answer) == ["cursor", "events", "node", "session", "type"]
    (welcome,) = answer["events"]
    assert (welcome["type"], welcome["node"]) == ("welcome", answer["node"])
    epoch = answer["cursor"].split("~")[1]
    assert answer["cursor"] == f"a~{epoch}~0,b~{epoch}~1"  # b starts after its old message


async def test_a_poll_waits_for_the_next_message_and_moves_the_cursor(oneway: OneWay) -> None:
    answer = await first_poll(oneway, "r")
    waiting = asyncio.ensure_future(oneway.poll(session=answer["session"], cursor=answer["cursor"]))
    await oneway.publish("r", "hello")
    status, got = await asyncio.wait_for(waiting, 10)
    assert status == 200
    [message] = got["events"]
    assert (message["type"], message["offset"], message["data"]) == ("message", 1, "hello")
    room, epoch, offset = answer["cursor"].split("~")
    assert (room, offset) == ("r", "0")
    assert got["cursor"] == f"r~{epoch}~1"


async def test_timeout_zero_answers_at_once_with_nothing(oneway: OneWay) -> None:
    answer = await first_poll(oneway, "quiet")
    status, got = await oneway.poll(session=answer["session"], cursor=answer["cursor"], timeout=0)
    assert (status, got["events"], got["cursor"]) == (200, [], answer["cursor"])


async def test_missed_messages_come_in_order_exactly_once(oneway: OneWay) -> None:
    answer = await first_poll(oneway, "r")
    for n in range(1, 6):
        await oneway.publish("r", n)
    epoch = answer["cursor"].split("~")[1]
    status, got = await oneway.poll(session=answer["session"], cursor=f"r~{epoch}~2")
    assert status == 200
    assert [(e["offset"], e["data"]) for e in got["events"]] == [(3, 3), (4, 4), (5, 5)]
    assert got["cursor"] == f"r~{epoch}~5"


async def test_a_full_answer_stops_its_cursor_where_it_ends(
    server_factory: ServerFactory,
) -> None:
    server = server_factory("--history", "memory", "--api-key", "test-key", "--max-buffer", "1500")
    async with aiohttp.ClientSession() as http:
        client = OneWay(http, server.http_url)
        answer = await first_poll(client, "big")
        for n in range(1, 41):
            await client.publish("big", "x" * 100 + str(n))
        token, cursor, polls = answer["session"], answer["cursor"], 0
        seen: list[int] = []
        while len(seen) < 40:
            status, got = await client.poll(session=token, cursor=cursor, timeout=0)
            assert status == 200 and got["events"], got
            seen += [event["offset"] for event in got["events"]]
            token, cursor, polls = got["session"], got["cursor"], polls + 1
        assert seen == list(range(1, 41))
        assert polls >= 4  # each answer held at most about 1500 bytes


async def test_bad_requests_get_json_errors_never_a_500(server_factory: ServerFactory) -> None:
    server = server_factory("--history", "memory", "--max-rooms", "2", "--poll-timeout", "5")
    async with aiohttp.ClientSession() as http:
        client = OneWay(http, server.http_url)
        session = (await first_poll(client, "a"))["session"]
        cases: list[tuple[dict[str, Any], int, str]] = [
            ({}, 400, "bad_request"),
            ({"rooms": "a,b,c"}, 400, "bad_request"),
            ({"rooms": "a,,b,c"}, 400, "bad_request"),
            ({"rooms": "bad/room"}, 400, "invalid_room"),
            ({"rooms": "a", "cursor": "not-a-cursor"}, 400, "bad_request"),
            ({"rooms": "a", "cursor": "a~e~1~2"}, 400, "bad_request"),
            ({"session": session, "timeout": "6"}, 400, "bad_request"),
            ({"session": session, "timeout": "soon"}, 400, "bad_request"),
            ({"session": session + "x"}, 401, "unauthorized"),
        ]
        for params, status, code in cases:
            got_status, body = await client.poll(**params)
            assert (got_status, body["type"], body["code"]) == (status, "error", code), params
        got_status, body = await client.poll(session=session, cursor="a~0ddba11a~7")
        assert (got_status, body["code"]) == (409, "cursor_expired")
        assert body["cursor"].startswith("a~") and body["cursor"].endswith("~0")


async def test_a_newer_poll_of_a_session_answers_the_older_one(oneway: OneWay) -> None:
    answer = await first_poll(oneway, "r")
    older = asyncio.ensure_future(oneway.poll(session=answer["session"], cursor=answer["cursor"]))
    status, got = 0, dict[str, Any]()
    while not older.done():  # the newer poll may come before the older one waits: repeat
        status, got = await oneway.poll(
            session=answer["session"], cursor=answer["cursor"], timeout=0
        )
        await asyncio.wait([older], timeout=0.5)
    assert status == 200 and got["events"] == []
    assert (await older)[1]["events"] == []


async def test_pollers_are_members_until_they_stop_polling(
    server_factory: ServerFactory, ws_connect: Any
) -> None:
    server = server_factory(
        "--history", "memory", "--poll-timeout", "1", "--presence-ttl", "1.5"
    )  # fmt: skip
    watcher: WsClient = await ws_connect(server.ws_url + "?name=watcher")
    await watcher.request(type="join", room="p", id=1)
    async with aiohttp.ClientSession() as http:
        client = OneWay(http, server.http_url)
        answer = await first_poll(client, "p", name="poller")
        member = {"session": answer["events"][0]["session"], "user": "poller"}
        assert await watcher.until("joined") == {"type": "joined", "room": "p", "member": member}
        for _ in range(3):  # polls past the TTL: no left, no second joined
            status, answer = await client.poll(session=answer["session"], cursor=answer["cursor"])
            assert status == 200
        reply = await watcher.request(type="presence", room="p", id=2)
        assert sorted(m["user"] for m in reply["members"]) == ["poller", "watcher"]
        # it stops polling: left after poll timeout + presence TTL (2.5 s), swept every 0.5 s
        left = await watcher.until("left", timeout=10)
        assert left == {"type": "left", "room": "p", "member": member}
        reply = await watcher.request(type="presence", room="p", id=3)
        assert [m["user"] for m in reply["members"]] == ["watcher"]


async def test_a_waiting_poll_answers_when_the_node_drains(node: Node) -> None:
    async with TestClient(TestServer(create_app(node))) as http:
        first = await (await http.get("/poll", params={"rooms": "r"})).json()
        sid = first["events"][0]["session"]
        params = {"session": first["session"], "cursor": first["cursor"]}
        waiting = asyncio.ensure_future(http.get("/poll", params=params))
        async with asyncio.timeout(5):
            while sid not in node.sessions:  # noqa: ASYNC110 - until the poll waits in the node
                await asyncio.sleep(0.01)
        await node.drain()
        reply = await asyncio.wait_for(waiting, 5)
        assert reply.status == 200
        got = await reply.json()
        assert (got["events"], got["cursor"]) == ([], first["cursor"])


async def test_an_expired_room_does_not_move_the_others_past_their_gap(
    server_factory: ServerFactory,
) -> None:
    server = server_factory("--history", "memory", "--api-key", "test-key", "--history-size", "2")
    async with aiohttp.ClientSession() as http:
        client = OneWay(http, server.http_url)
        answer = await first_poll(client, "a,b")
        epoch = answer["cursor"].split("~")[1]
        for n in range(1, 6):
            await client.publish("a", n)  # a keeps only 4 and 5: 2 and 3 are gone
        await client.publish("b", 1)
        status, body = await client.poll(
            session=answer["session"], cursor=f"a~{epoch}~1,b~{epoch}~0", timeout=0
        )
        assert (status, body["code"], body["rooms"]) == (409, "cursor_expired", ["a"])
        assert body["cursor"] == f"a~{epoch}~5,b~{epoch}~0"  # b still gets its message 1
        status, got = await client.poll(session=answer["session"], cursor=body["cursor"])
        assert [(e["room"], e["offset"]) for e in got["events"]] == [("b", 1)]


async def test_a_bad_name_is_a_json_error_on_every_transport(oneway: OneWay) -> None:
    assert await oneway.poll(rooms="a", name="") == (400, {
        "type": "error", "code": "bad_request", "message": "name must be 1-64 characters"
    })  # fmt: skip
    status, body = await oneway.sse_error(rooms="a", name="x" * 65)
    assert (status, body["code"]) == (400, "bad_request")
    async with oneway.http.get(oneway.base + "/ws", params={"name": "x" * 65}) as reply:
        assert (reply.status, (await reply.json())["code"]) == (400, "bad_request")

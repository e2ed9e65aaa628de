"""The WebSocket endpoint over real sockets, with the independent `websockets` client
and a bare RFC 6455 client for misbehaving peers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
import websockets
from conftest import ServerFactory, WsClient
from websockets.exceptions import ConnectionClosed, InvalidStatus

from roomcast.testing import RawWebSocket, ServerProcess

Connect = Callable[..., Any]


async def test_welcome_names_the_session_node_and_heartbeat(
    server: ServerProcess, ws_connect: Connect
) -> None:
    client: WsClient = await ws_connect(server.ws_url + "?name=alice")
    welcome = client.welcome
    assert set(welcome) == {"type", "session", "node", "heartbeat"}
    assert welcome["heartbeat"] == 25
    assert len(welcome["session"]) == 12
    await client.send(type="join", room="r", id=1)
    await client.until("ok")
    assert await client.request(type="presence", room="r", id=2) == {
        "type": "ok", "id": 2, "room": "r",
        "members": [{"session": welcome["session"], "user": "alice"}],
    }  # fmt: skip


async def test_anonymous_names_and_bad_names(server: ServerProcess, ws_connect: Connect) -> None:
    client: WsClient = await ws_connect(server.ws_url)
    await client.request(type="join", room="r", id=1)
    members = (await client.request(type="presence", room="r", id=2))["members"]
    assert members[0]["user"].startswith("anon-")
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(server.ws_url + "?name=" + "x" * 65)
    assert refused.value.response.status_code == 400


async def test_every_command_and_its_reply(server: ServerProcess, ws_connect: Connect) -> None:
    alice: WsClient = await ws_connect(server.ws_url + "?name=alice")
    bob: WsClient = await ws_connect(server.ws_url + "?name=bob")
    joined = await alice.request(type="join", room="lobby", id="a1")
    epoch = joined["epoch"]
    assert joined == {"type": "ok", "id": "a1", "room": "lobby", "epoch": epoch, "offset": 0}
    await bob.request(type="join", room="lobby", id=1)
    assert (await alice.recv())["type"] == "joined"
    sent = {"text": "hi", "n": [1, 2.5, None, True]}
    ack = await bob.request(type="publish", room="lobby", data=sent, id=2)
    assert ack == {"type": "ok", "id": 2, "room": "lobby", "epoch": epoch, "offset": 1}
    message = await alice.recv()
    assert message == {
        "type": "message", "room": "lobby", "epoch": epoch, "offset": 1, "data": sent,
        "from": {"session": bob.welcome["session"], "user": "bob"}, "ts": message["ts"],
    }  # fmt: skip
    history = await alice.request(type="history", room="lobby", limit=10, id=3)
    assert history == {
        "type": "ok", "id": 3, "room": "lobby", "epoch": epoch, "offset": 1,
        "messages": [message],
    }  # fmt: skip
    before = await alice.request(type="history", room="lobby", before=1, id=4)
    assert before["messages"] == []
    assert await alice.request(type="ping", id=5) == {"type": "pong", "id": 5}
    await alice.send(type="ping")
    assert await alice.recv() == {"type": "pong"}
    assert await bob.request(type="leave", room="lobby", id=6) == {
        "type": "ok", "id": 6, "room": "lobby"
    }  # fmt: skip
    assert (await alice.recv())["type"] == "left"
    rejoin = await bob.request(type="join", room="lobby", id=7)
    assert rejoin["offset"] == 1


async def test_error_codes_and_the_session_goes_on(
    server_factory: ServerFactory, ws_connect: Connect
) -> None:
    server = server_factory(
        "--history", "memory", "--max-data-size", "100", "--max-rooms", "2",
        "--readonly-rooms", "news:*", "--publish-rate", "1", "--publish-burst", "2",
    )  # fmt: skip
    client: WsClient = await ws_connect(server.ws_url)

    async def error(**command: Any) -> tuple[str, Any]:
        reply = await client.request(**command)
        assert reply["type"] == "error", reply
        return reply["code"], reply["id"]

    assert await error(type="publish", room="r", data=1, id=1) == ("not_joined", 1)
    assert await error(type="presence", room="r", id=2) == ("not_joined", 2)
    assert await error(type="history", room="r", id=3) == ("not_joined", 3)
    assert await error(type="leave", room="r", id=4) == ("not_joined", 4)
    assert await error(type="join", room="bad room", id=5) == ("invalid_room", 5)
    assert await error(type="shout", id=6) == ("unknown_type", 6)
    assert await error(type="join", id=7) == ("bad_request", 7)
    await client.request(type="join", room="r", id=8)
    await client.request(type="join", room="news:today", id=9)
    assert await error(type="join", room="third", id=10) == ("rate_limited", 10)
    assert await error(type="publish", room="news:today", data=1, id=11) == ("forbidden", 11)
    assert await error(type="publish", room="r", data="x" * 200, id=12) == ("too_large", 12)
    await client.request(type="publish", room="r", data=1, id=13)
    await client.request(type="publish", room="r", data=2, id=14)
    assert await error(type="publish", room="r", data=3, id=15) == ("rate_limited", 15)
    await client.ws.send("{not json")
    assert await client.recv() == {
        "type": "error", "code": "bad_request", "message": "the frame is not valid JSON"
    }  # fmt: skip
    await client.ws.send('{"type":"ping","id":17,"x":' + "[" * 20000 + "]" * 20000 + "}")
    assert (await client.recv())["message"] == "the JSON is nested too deeply (more than 32 levels)"
    await client.ws.send(b"\x00\x01")
    assert (await client.recv())["message"] == "binary frames are not supported"
    assert await client.request(type="ping", id=16) == {"type": "pong", "id": 16}


async def test_a_frame_over_the_size_limit_closes_with_1009(
    server: ServerProcess, ws_connect: Connect
) -> None:
    client: WsClient = await ws_connect(server.ws_url)
    await client.ws.send(json.dumps({"type": "ping", "pad": "x" * 70_000}))
    with pytest.raises(ConnectionClosed) as closed:
        await client.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009


async def test_a_client_that_never_answers_pings_is_closed_with_4002(
    server_factory: ServerFactory, ws_connect: Connect
) -> None:
    server = server_factory("--history", "memory", "--heartbeat", "0.2")
    polite: WsClient = await ws_connect(server.ws_url)  # `websockets` answers pings
    raw = await RawWebSocket.connect("127.0.0.1", server.port)
    opcode, payload = await raw.recv_frame()
    assert (opcode, json.loads(payload)["heartbeat"]) == (1, 0.2)
    assert await asyncio.wait_for(raw.recv_frame(), 2) == (0x9, b"")  # ping, unanswered
    opcode, payload = await asyncio.wait_for(raw.recv_frame(), 2)
    assert (opcode, payload[:2]) == (0x8, (4002).to_bytes(2, "big"))
    assert payload[2:] == b"heartbeat timeout"
    await raw.close()
    for n in range(3):  # the polite client outlives several heartbeats
        await asyncio.sleep(0.2)  # let heartbeats pass: this is the thing under test
        assert await polite.request(type="ping", id=n) == {"type": "pong", "id": n}


async def test_a_client_that_stops_reading_is_cut_off_and_the_room_goes_on(
    server_factory: ServerFactory, ws_connect: Connect
) -> None:
    server = server_factory(
        "--history", "memory", "--max-buffer", "262144", "--publish-rate", "0", "--api-key", "k"
    )
    slow = await RawWebSocket.connect("127.0.0.1", server.port, rcvbuf=4096)
    welcome = json.loads((await slow.recv_frame())[1])
    slow.send_text(json.dumps({"type": "join", "room": "r", "id": 1}))
    assert json.loads((await slow.recv_frame())[1])["type"] == "ok"
    fast: WsClient = await ws_connect(server.ws_url, max_queue=None)  # reads all it gets
    await fast.request(type="join", room="r", id="j")
    data = "x" * 8000
    offsets: list[int] = []
    left = None
    # Publish in waves until the server gives up on the slow client: its kernel buffers
    # (several MB on loopback) fill first, then its 256 KiB outbound buffer.
    while left is None and len(offsets) < 5000:
        for n in range(len(offsets), len(offsets) + 100):
            await fast.send(type="publish", room="r", data=data, id=n)
        wave_end = len(offsets) + 100
        while len(offsets) < wave_end:
            frame = await fast.recv()
            if frame["type"] == "message":
                offsets.append(frame["offset"])
            elif frame["type"] == "left":
                left = frame
    assert offsets == list(range(1, len(offsets) + 1))
    assert left is not None, "the slow client was never disconnected"
    assert left["member"]["session"] == welcome["session"]
    presence = await fast.request(type="presence", room="r", id="p")
    assert [m["session"] for m in presence["members"]] == [fast.welcome["session"]]
    received_close = None
    while received_close is None:  # read what was buffered: it ends with a close 4001
        try:
            opcode, payload = await asyncio.wait_for(slow.recv_frame(), 10)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            break
        if opcode == 0x8:
            received_close = int.from_bytes(payload[:2], "big")
    assert received_close in {4001, None}  # None: the server had to abort the socket
    await slow.close()


async def test_shutdown_closes_clients_with_1012_and_exits_0(
    server_factory: ServerFactory, ws_connect: Connect
) -> None:
    server = server_factory()
    clients: list[WsClient] = [await ws_connect(server.ws_url) for _ in range(3)]
    for n, client in enumerate(clients):
        await client.request(type="join", room="r", id=n)
    loop = asyncio.get_running_loop()
    exit_code = loop.run_in_executor(None, server.stop)
    for client in clients:
        with pytest.raises(ConnectionClosed) as closed:
            await client.until("never")
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
            1012, "server shutting down"
        )  # fmt: skip
    assert await asyncio.wait_for(exit_code, 10) == 0


@pytest.mark.parametrize("how", ["sigterm", "sigkill"])
async def test_recovery_after_a_restart_with_sqlite_history(
    how: str, server_factory: ServerFactory, ws_connect: Connect
) -> None:
    server = server_factory("--api-key", "k")
    client: WsClient = await ws_connect(server.ws_url)
    epoch = (await client.request(type="join", room="r", id=0))["epoch"]
    for n in range(1, 6):
        assert (await client.request(type="publish", room="r", data=n, id=n))["offset"] == n
    if how == "sigkill":
        server.kill()
        server.start()
    else:
        server.restart()
    other: WsClient = await ws_connect(server.ws_url)
    await other.request(type="join", room="r", id=0)
    for n in range(6, 11):
        assert (await other.request(type="publish", room="r", data=n, id=n))["offset"] == n
    back: WsClient = await ws_connect(server.ws_url)
    await back.send(type="join", room="r", since={"epoch": epoch, "offset": 3}, id="again")
    frames = [await back.recv() for _ in range(8)]
    assert [(f["offset"], f["data"]) for f in frames[:7]] == [(n, n) for n in range(4, 11)]
    assert frames[7] == {
        "type": "ok", "id": "again", "room": "r", "epoch": epoch, "offset": 10,
        "recovered": True,
    }  # fmt: skip
    await other.request(type="publish", room="r", data=11, id=11)
    live = await back.until("message")
    assert (live["offset"], live["data"]) == (11, 11)


async def test_recovery_fails_cleanly_when_memory_history_was_lost(
    server: ServerProcess, ws_connect: Connect
) -> None:
    client: WsClient = await ws_connect(server.ws_url)
    epoch = (await client.request(type="join", room="r", id=0))["epoch"]
    await client.request(type="publish", room="r", data=1, id=1)
    server.restart()
    back: WsClient = await ws_connect(server.ws_url)
    reply = await back.request(
        type="join", room="r", since={"epoch": epoch, "offset": 1}, id=2
    )
    assert reply["recovered"] is False
    assert reply["epoch"] != epoch
    assert reply["offset"] == 0

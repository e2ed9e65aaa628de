"""The reserved rooms (``roomcast:*``) are a security boundary: whatever ``--auth`` says,
no client joins them or publishes to them on WebSocket, SSE or long polling (with
POST /send), not even with a token granting every room; only the admin page's token
joins ``roomcast:admin``, over WebSocket, and there it only reads the nodes' stats."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import jwt
import pytest
import websockets
from conftest import ServerFactory, WsClient
from oneway_client import OneWay
from websockets.exceptions import InvalidStatus

from roomcast.auth import ADMIN_ROOM, mint
from roomcast.testing import RedisProcess, ServerProcess

Connect = Callable[..., Any]
KEY = "admin-rooms-api-key"
TOKEN_SECRET = "admin-rooms-token-secret-0123456789abcdef"
SECRET = "admin-rooms-cluster-secret"
HEADER = {"X-Roomcast-Admin": "1"}
RESERVED = [ADMIN_ROOM, "roomcast:control", "roomcast:anything"]
AUTH_MODES = ["off", "required"]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
        yield session


def start(factory: ServerFactory, auth: str, *extra: str) -> ServerProcess:
    args = ["--history", "memory", "--api-key", KEY, "--publish-rate", "0", *extra]
    if auth != "off":
        args += ["--auth", auth, "--token-secret", TOKEN_SECRET]
    server: ServerProcess = factory(*args)
    return server


def everything(auth: str) -> dict[str, str]:
    """Query parameters of a client whose token grants every room (none with auth off)."""
    if auth == "off":
        return {"name": "mallory"}
    return {"token": mint("mallory", key=TOKEN_SECRET.encode(), join=("*",), publish=("*",))}


async def admin_token(http: aiohttp.ClientSession, server: ServerProcess) -> str:
    """What the admin page gets after logging in: a token for its WebSocket."""
    url = server.http_url
    async with http.post(url + "/admin/login", json={"password": KEY}, headers=HEADER) as reply:
        assert reply.status == 200
        cookie = reply.cookies["roomcast_admin"].value
    headers = {**HEADER, "Cookie": f"roomcast_admin={cookie}"}
    async with http.get(url + "/admin/api/token", headers=headers) as reply:
        assert reply.status == 200
        token: str = (await reply.json())["token"]
        return token


def query(params: dict[str, str]) -> str:
    return "?" + "&".join(f"{key}={value}" for key, value in params.items())


async def codes(client: WsClient, *commands: dict[str, Any]) -> list[str]:
    """The reply of each command: ``ok`` or its error code."""
    found = []
    for n, command in enumerate(commands):
        reply = await client.request(**command, id=n)
        found.append(reply["type"] if reply["type"] == "ok" else reply["code"])
    return found


@pytest.mark.parametrize("auth", AUTH_MODES)
async def test_no_client_joins_or_publishes_to_a_reserved_room_over_websocket(
    server_factory: ServerFactory, ws_connect: Connect, auth: str
) -> None:
    server = start(server_factory, auth)
    client: WsClient = await ws_connect(server.ws_url + query(everything(auth)))
    for room in RESERVED:
        reply = await client.request(type="join", room=room, id="join")
        assert (reply["type"], reply["code"], reply["room"]) == ("error", "forbidden", room)
        assert reply["message"] == f"mallory may not join room {room!r}"
        assert await codes(
            client,
            {"type": "publish", "room": room, "data": {"fake": "stats"}},
            {"type": "history", "room": room},
            {"type": "presence", "room": room},
        ) == ["not_joined", "not_joined", "not_joined"]
    assert await codes(client, {"type": "join", "room": "lobby"}) == ["ok"]  # the token works


@pytest.mark.parametrize("transport", ["sse", "poll"])
@pytest.mark.parametrize("auth", AUTH_MODES)
async def test_no_client_joins_or_publishes_to_a_reserved_room_one_way(
    server_factory: ServerFactory, http: aiohttp.ClientSession, auth: str, transport: str
) -> None:
    server = start(server_factory, auth)
    client = OneWay(http, server.http_url)
    params = everything(auth)
    for rooms in (ADMIN_ROOM, f"lobby,{ADMIN_ROOM}", "roomcast:control"):
        if transport == "sse":
            status, body = await client.sse_error(rooms=rooms, **params)
        else:
            status, body = await client.poll(rooms=rooms, **params)
        assert (status, body["code"], body["room"]) == (403, "forbidden", rooms.split(",")[-1])
    # A session of its own (in lobby) asks through POST /send.
    if transport == "sse":
        stream = await client.sse(rooms="lobby", **params)
        session = (await stream.until("welcome")).data["token"]
    else:
        status, answer = await client.poll(rooms="lobby", timeout=0, **params)
        assert status == 200
        session = answer["session"]
    status, reply = await client.send(session, {"type": "join", "room": ADMIN_ROOM})
    assert (status, reply["code"], reply["room"]) == (403, "forbidden", ADMIN_ROOM)
    status, reply = await client.send(session, {"type": "publish", "room": ADMIN_ROOM,
                                                "data": {"fake": "stats"}})  # fmt: skip
    assert (status, reply["code"]) == (400, "not_joined")
    client.close()
    async with http.get(f"{server.http_url}/api/rooms/{ADMIN_ROOM}/history?limit=8",
                        headers={"Authorization": f"Bearer {KEY}"}) as history:  # fmt: skip
        stored = (await history.json())["messages"]
    assert stored and all(message["data"].get("fake") is None for message in stored)


@pytest.mark.parametrize("auth", AUTH_MODES)
async def test_the_admin_token_reads_the_stats_and_publishes_nothing(
    server_factory: ServerFactory, http: aiohttp.ClientSession, ws_connect: Connect, auth: str
) -> None:
    server = start(server_factory, auth, "--node-id", "n1")
    token = await admin_token(http, server)
    admin: WsClient = await ws_connect(f"{server.ws_url}?token={token}")
    reply = await admin.request(type="join", room=ADMIN_ROOM, id="j")
    assert (reply["type"], reply["room"]) == ("ok", ADMIN_ROOM)
    snapshot = (await admin.until("message", timeout=10))["data"]
    assert (snapshot["node"], snapshot["state"], snapshot["connections"]) == (
        "n1", "ready", {"websocket": 1},
    )  # fmt: skip
    history = await admin.request(type="history", room=ADMIN_ROOM, limit=100, id="h")
    assert 1 <= len(history["messages"]) <= 8  # the room keeps a few
    assert await codes(
        admin,
        {"type": "publish", "room": ADMIN_ROOM, "data": {"fake": "stats"}},
        {"type": "presence", "room": ADMIN_ROOM},
        {"type": "join", "room": "roomcast:control"},
        {"type": "join", "room": "lobby"},
    ) == ["forbidden", "forbidden", "forbidden", "ok" if auth == "off" else "forbidden"]
    renewed = await admin_token(http, server)  # what the page does before its token expires
    reply = await admin.request(type="refresh", token=renewed, id="r")
    assert (reply["type"], reply["expires"]) == ("ok", jwt.decode(
        renewed, options={"verify_signature": False})["exp"])  # fmt: skip
    # Only over WebSocket: a one-way session does not carry the admin grant.
    status, body = await OneWay(http, server.http_url).sse_error(rooms=ADMIN_ROOM, token=token)
    assert (status, body["code"]) == (403, "forbidden")


async def test_an_admin_token_of_another_password_is_refused(
    server_factory: ServerFactory, http: aiohttp.ClientSession
) -> None:
    mine = start(server_factory, "off", "--secret", SECRET)
    other = start(server_factory, "off", "--secret", SECRET, "--admin-password", "another-pass")
    token = await admin_token(http, mine)
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(f"{other.ws_url}?token={token}")
    assert refused.value.response.status_code == 401
    body = json.loads(refused.value.response.body or b"{}")
    assert body["code"] == "unauthorized"
    assert body["message"].startswith("invalid admin token: Signature verification failed")


async def test_the_admin_room_shows_every_node_of_a_cluster(
    server_factory: ServerFactory, http: aiohttp.ClientSession, ws_connect: Connect,
    redis_server: RedisProcess,
) -> None:  # fmt: skip
    cluster = ("--broker", redis_server.url, "--secret", SECRET)
    first, _ = (start(server_factory, "off", *cluster, "--node-id", name) for name in "ab")
    admin: WsClient = await ws_connect(f"{first.ws_url}?token={await admin_token(http, first)}")
    assert (await admin.request(type="join", room=ADMIN_ROOM, id=1))["type"] == "ok"
    seen: set[str] = set()
    async with asyncio.timeout(10):
        while seen != {"a", "b"}:
            seen.add((await admin.until("message"))["data"]["node"])

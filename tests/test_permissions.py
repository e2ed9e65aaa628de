"""Who may do what, on every transport and through any node of a cluster.

Two nodes share a Redis; a user connects to one and its commands go, over WebSocket,
SSE + POST /send or long polling + POST /send, to either node. A token's grants and the
namespaces of the config file decide every join, publish, history and presence.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pytest
import websockets
from conftest import ServerFactory
from oneway_client import OneWay

from roomcast.auth import mint
from roomcast.testing import RedisProcess, ServerProcess

SECRET = "permission-test-secret-0123456789abcdef"
CONFIG = """
[namespaces."public:*"]
anonymous = true

[namespaces."feed:*"]
anonymous = true
publish = "api"

[namespaces."quiet:*"]
presence = false
"""
_ids = itertools.count(1)


def token(user: str = "alice", ttl: float = 600, **grants: tuple[str, ...]) -> str:
    join = grants.get("join", ("lobby", "quiet:*"))
    publish = grants.get("publish", ("chat:*", "quiet:*"))
    return mint(user, key=SECRET.encode(), join=join, publish=publish, ttl=ttl)


def start_node(factory: ServerFactory, tmp_path: Path, redis: RedisProcess, auth: str) -> Any:
    config = tmp_path / "roomcast.toml"
    config.write_text(CONFIG)
    return factory(
        "--broker", redis.url, "--auth", auth, "--token-secret", SECRET, "--secret", SECRET,
        "--config", str(config), "--api-key", "test-key", "--publish-rate", "0",
    )  # fmt: skip


@pytest.fixture
def nodes(
    server_factory: ServerFactory, tmp_path: Path, redis_server: RedisProcess
) -> tuple[ServerProcess, ServerProcess]:
    return (
        start_node(server_factory, tmp_path, redis_server, "optional"),
        start_node(server_factory, tmp_path, redis_server, "optional"),
    )


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Client(Protocol):
    """One user's connection; ``command`` answers the reply's type or error code."""

    async def command(self, **command: Any) -> str: ...

    async def close(self) -> None: ...


class WsUser:
    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def open(cls, node: ServerProcess, bearer: str | None) -> WsUser:
        headers = {} if bearer is None else {"Authorization": f"Bearer {bearer}"}
        ws = await websockets.connect(node.ws_url, additional_headers=headers)
        assert json.loads(await ws.recv())["type"] == "welcome"
        return cls(ws)

    async def command(self, **command: Any) -> str:
        command["id"] = next(_ids)
        await self.ws.send(json.dumps(command))
        while True:
            reply = json.loads(await _recv(self.ws))
            if reply.get("id") == command["id"]:
                return str(reply["code"] if reply["type"] == "error" else reply["type"])

    async def close(self) -> None:
        await self.ws.close()


async def _recv(ws: websockets.ClientConnection) -> str | bytes:
    import asyncio

    return await asyncio.wait_for(ws.recv(), 5)


@dataclass
class OneWayUser:
    """SSE or long polling: opened on one node, every POST /send to the other."""

    client: OneWay
    sender: OneWay
    session: str
    codes: list[int] = field(default_factory=list)

    @classmethod
    async def open(
        cls, http: aiohttp.ClientSession, kind: str, opened: ServerProcess, sent: ServerProcess,
        bearer: str | None,
    ) -> OneWayUser:  # fmt: skip
        client, sender = OneWay(http, opened.http_url), OneWay(http, sent.http_url)
        params = {"rooms": "public:start"} | ({} if bearer is None else {"token": bearer})
        if kind == "sse":
            stream = await client.sse(**params)
            session = (await stream.until("welcome")).data["token"]
            stream.close()
        else:
            status, answer = await client.poll(**params)
            assert status == 200, answer
            session = answer["session"]
        return cls(client, sender, session)

    async def command(self, **command: Any) -> str:
        status, reply = await self.sender.send(self.session, command)
        self.codes.append(status)
        if "session" in reply:
            self.session = reply["session"]
        return str(reply["code"] if reply["type"] == "error" else reply["type"])

    async def close(self) -> None:
        self.client.close()


TRANSPORTS = ["websocket", "sse", "poll"]
ROUTES = ["same-node", "other-node"]


async def open_user(
    http: aiohttp.ClientSession, nodes: tuple[ServerProcess, ServerProcess], transport: str,
    route: str, bearer: str | None,
) -> Client:  # fmt: skip
    first, second = nodes
    if transport == "websocket":
        return await WsUser.open(second if route == "other-node" else first, bearer)
    sent = second if route == "other-node" else first
    return await OneWayUser.open(http, transport, first, sent, bearer)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_user_does_only_what_its_token_grants(
    http: aiohttp.ClientSession, nodes: tuple[ServerProcess, ServerProcess], transport: str,
    route: str,
) -> None:  # fmt: skip
    alice = await open_user(http, nodes, transport, route, token())
    try:
        results = {
            "join dm:bob": await alice.command(type="join", room="dm:bob"),
            "history dm:bob": await alice.command(type="history", room="dm:bob"),
            "presence dm:bob": await alice.command(type="presence", room="dm:bob"),
            "publish dm:bob": await alice.command(type="publish", room="dm:bob", data=1),
            "join lobby": await alice.command(type="join", room="lobby"),
            "publish lobby": await alice.command(type="publish", room="lobby", data=1),
            "join chat:1": await alice.command(type="join", room="chat:1"),
            "publish chat:1": await alice.command(type="publish", room="chat:1", data=1),
            "join feed:x": await alice.command(type="join", room="feed:x"),
            "publish feed:x": await alice.command(type="publish", room="feed:x", data=1),
            "join quiet:1": await alice.command(type="join", room="quiet:1"),
            "presence quiet:1": await alice.command(type="presence", room="quiet:1"),
            "history quiet:1": await alice.command(type="history", room="quiet:1"),
        }
    finally:
        await alice.close()
    assert results == {
        "join dm:bob": "forbidden",
        "history dm:bob": "not_joined",
        "presence dm:bob": "not_joined",
        "publish dm:bob": "not_joined",
        "join lobby": "ok",
        "publish lobby": "forbidden",
        "join chat:1": "ok",
        "publish chat:1": "ok",
        "join feed:x": "ok",
        "publish feed:x": "forbidden",
        "join quiet:1": "ok",
        "presence quiet:1": "forbidden",
        "history quiet:1": "ok",
    }
    if isinstance(alice, OneWayUser):  # refusals are HTTP statuses too
        assert alice.codes == [403, 400, 400, 400, 200, 403, 200, 200, 200, 403, 200, 403, 200]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_anonymous_user_is_kept_to_anonymous_namespaces(
    http: aiohttp.ClientSession, nodes: tuple[ServerProcess, ServerProcess], transport: str,
    route: str,
) -> None:  # fmt: skip
    guest = await open_user(http, nodes, transport, route, None)
    try:
        assert [
            await guest.command(type="join", room="lobby"),
            await guest.command(type="join", room="chat:1"),
            await guest.command(type="join", room="public:x"),
            await guest.command(type="publish", room="public:x", data="hi"),
            await guest.command(type="presence", room="public:x"),
            await guest.command(type="join", room="feed:x"),
            await guest.command(type="publish", room="feed:x", data="hi"),
            await guest.command(type="refresh", token=token()),
        ] == ["forbidden", "forbidden", "ok", "ok", "ok", "ok", "forbidden", "forbidden"]
    finally:
        await guest.close()


@pytest.mark.parametrize("node_index", [0, 1])
async def test_one_way_rooms_in_the_url_are_checked_before_the_stream_starts(
    http: aiohttp.ClientSession, nodes: tuple[ServerProcess, ServerProcess], node_index: int
) -> None:
    client = OneWay(http, nodes[node_index].http_url)
    status, body = await client.sse_error(rooms="public:a,dm:bob", token=token())
    assert (status, body["code"]) == (403, "forbidden")
    assert (body["message"], body["room"]) == ("alice may not join room 'dm:bob'", "dm:bob")
    status, body = await client.poll(rooms="lobby,dm:bob", token=token())
    assert (status, body["code"]) == (403, "forbidden")
    status, body = await client.poll(rooms="lobby")  # anonymous: only public rooms
    assert (status, body["code"]) == (403, "forbidden")


async def test_a_session_token_cannot_be_forged_to_gain_rooms(
    http: aiohttp.ClientSession, nodes: tuple[ServerProcess, ServerProcess]
) -> None:
    """The session token is signed by the cluster: editing its rooms breaks it."""
    client = OneWay(http, nodes[0].http_url)
    status, answer = await client.poll(rooms="lobby", token=token())
    assert status == 200
    head, body, signature = answer["session"].split(".")
    import base64

    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["rooms"] = ["dm:bob"]
    claims["grants"] = None
    forged_body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    forged = f"{head}.{forged_body}.{signature}"
    status, reply = await OneWay(http, nodes[1].http_url).send(
        forged, {"type": "history", "room": "dm:bob"}
    )
    assert (status, reply["code"]) == (401, "unauthorized")
    status, reply = await client.poll(session=forged)
    assert (status, reply["code"]) == (401, "unauthorized")

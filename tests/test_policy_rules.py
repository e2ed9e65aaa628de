"""Namespace rules seen by clients: presence off, API-only publishing, presence caps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import ServerFactory, WsClient

from roomcast.testing import ServerProcess

CONFIG = """
[namespaces."quiet:*"]
presence = false

[namespaces."news:*"]
publish = "api"
"""


@pytest.fixture
def server(server_factory: ServerFactory, tmp_path: Path) -> ServerProcess:
    config = tmp_path / "roomcast.toml"
    config.write_text(CONFIG)
    return server_factory(
        "--history", "memory", "--config", str(config), "--api-key", "test-key",
        "--max-presence", "2",
    )  # fmt: skip


async def test_presence_off_means_no_presence_events_and_no_presence_command(
    server: ServerProcess, ws_connect: Callable[..., Any]
) -> None:
    first: WsClient = await ws_connect(server.ws_url + "?name=ann")
    second: WsClient = await ws_connect(server.ws_url + "?name=bob")
    for client in (first, second):
        assert (await client.request(type="join", room="quiet:1", id=1))["type"] == "ok"
        assert (await client.request(type="join", room="loud", id=2))["type"] == "ok"
    reply = await first.request(type="presence", room="quiet:1", id=3)
    assert (reply["code"], reply["message"]) == (
        "forbidden", "presence is off in this room's namespace"
    )  # fmt: skip
    assert (await second.request(type="leave", room="quiet:1", id=4))["type"] == "ok"
    await second.ws.close()
    left = await first.until("left")
    seen = [frame for frame in [*first.skipped, left] if frame["type"] in {"joined", "left"}]
    bob = {"session": second.welcome["session"], "user": "bob"}
    assert seen == [  # nothing for quiet:1, though bob joined and left it first
        {"type": "joined", "room": "loud", "member": bob},
        {"type": "left", "room": "loud", "member": bob},
    ]


async def test_api_only_rooms_take_publishes_from_the_api_only(
    server: ServerProcess, ws_connect: Callable[..., Any]
) -> None:
    client: WsClient = await ws_connect(server.ws_url)
    assert (await client.request(type="join", room="news:1", id=1))["type"] == "ok"
    refused = await client.request(type="publish", room="news:1", data="x", id=2)
    assert (refused["code"], refused["message"]) == (
        "forbidden", "clients may not publish to this room"
    )  # fmt: skip
    async with aiohttp.ClientSession() as http, http.post(
        server.http_url + "/api/publish", json={"room": "news:1", "data": "headline"},
        headers={"Authorization": "Bearer test-key"},
    ) as answer:  # fmt: skip
        assert answer.status == 200
    message = await client.until("message")
    assert (message["offset"], message["data"], message["from"]) == (1, "headline", None)


async def test_a_presence_reply_lists_at_most_max_presence_members(
    server: ServerProcess, ws_connect: Callable[..., Any]
) -> None:
    clients: list[WsClient] = [await ws_connect(f"{server.ws_url}?name=u{i}") for i in range(3)]
    for client in clients:
        await client.request(type="join", room="crowd", id=1)
    reply = await clients[0].request(type="presence", room="crowd", id=2)
    assert len(reply["members"]) == 2
    users = {member["user"] for member in reply["members"]}
    assert users < {"u0", "u1", "u2"}
    async with aiohttp.ClientSession() as http, http.get(
        server.http_url + "/api/rooms/crowd/presence", headers={"Authorization": "Bearer test-key"}
    ) as answer:  # fmt: skip
        assert len((await answer.json())["members"]) == 2

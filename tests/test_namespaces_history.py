"""History size and TTL per room namespace, end to end: a real server started with
``--config roomcast.toml``, clients over WebSocket."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerFactory, WsClient

from roomcast.testing import ServerProcess

CONFIG = """
[namespaces."small:*"]
history_size = 3

[namespaces."big:*"]
history_size = 10

[namespaces."brief:*"]
history_ttl = 1
"""

Connect = Callable[..., Any]


@pytest.fixture(params=["memory", "sqlite", "redis", "nats"])
def server(
    request: pytest.FixtureRequest, server_factory: ServerFactory, tmp_path: Path
) -> ServerProcess:
    """A server whose rooms keep 5 messages for ever, except those of the namespaces."""
    config = tmp_path / "roomcast.toml"
    config.write_text(CONFIG, encoding="utf-8")
    args = ["--config", str(config), "--history-size", "5"]
    if request.param in {"memory", "sqlite"}:
        args += ["--history", request.param]
    else:
        args += ["--broker", request.getfixturevalue(f"{request.param}_server").url]
    return server_factory(*args)


async def publish(client: WsClient, room: str, count: int) -> list[int]:
    """Publish ``count`` messages into ``room`` (joined first); their offsets."""
    join = await client.request(type="join", room=room, id=f"join {room}")
    assert join["type"] == "ok"
    offsets = []
    for n in range(count):
        ok = await client.request(type="publish", room=room, data={"n": n}, id=n)
        assert ok["type"] == "ok", ok
        offsets.append(ok["offset"])
    return offsets


async def history(client: WsClient, room: str, limit: int = 100) -> tuple[str, list[int]]:
    """The room's epoch and the offsets of its history."""
    ok = await client.request(type="history", room=room, limit=limit, id="history")
    assert ok["type"] == "ok", ok
    return ok["epoch"], [message["offset"] for message in ok["messages"]]


class Readers:
    """New clients joining a room from an offset, the room's epoch read by ``writer``."""

    def __init__(self, ws_connect: Connect, url: str, writer: WsClient) -> None:
        self.ws_connect, self.url, self.writer = ws_connect, url, writer

    async def recover(self, room: str, since: int) -> tuple[list[int], bool]:
        """The offsets replayed to a new client joining from ``since``, and ``recovered``."""
        client: WsClient = await self.ws_connect(self.url)
        position = {"epoch": (await history(self.writer, room, limit=1))[0], "offset": since}
        ok = await client.request(type="join", room=room, since=position, id="join")
        assert ok["type"] == "ok", ok
        replayed = [f["offset"] for f in client.skipped if f["type"] == "message"]
        return replayed, ok["recovered"]


async def test_each_namespace_keeps_its_own_history_size(
    server: ServerProcess, ws_connect: Connect
) -> None:
    writer: WsClient = await ws_connect(server.ws_url)
    for room in ("small:a", "big:a", "plain"):
        assert await publish(writer, room, 12) == list(range(1, 13))
    assert (await history(writer, "small:a"))[1] == [10, 11, 12]
    assert (await history(writer, "big:a"))[1] == list(range(3, 13))
    assert (await history(writer, "plain"))[1] == [8, 9, 10, 11, 12]
    assert (await history(writer, "big:a", limit=2))[1] == [11, 12]
    readers = Readers(ws_connect, server.ws_url, writer)
    assert await readers.recover("small:a", 8) == ([], False)  # 9 is gone
    assert await readers.recover("small:a", 9) == ([10, 11, 12], True)
    assert await readers.recover("big:a", 1) == ([], False)  # 2 is gone
    assert await readers.recover("big:a", 2) == (list(range(3, 13)), True)
    assert await readers.recover("plain", 6) == ([], False)
    assert await readers.recover("plain", 7) == ([8, 9, 10, 11, 12], True)


async def test_a_namespaces_ttl_expires_its_rooms_messages_only(
    server: ServerProcess, ws_connect: Connect
) -> None:
    writer: WsClient = await ws_connect(server.ws_url)
    assert await publish(writer, "brief:a", 3) == [1, 2, 3]
    assert await publish(writer, "plain", 3) == [1, 2, 3]
    assert (await history(writer, "brief:a"))[1] == [1, 2, 3]
    for _ in range(50):  # no event says a message expired: poll, for 5 s at most
        if not (await history(writer, "brief:a"))[1]:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("brief:a's messages did not expire within 5 s")
    assert (await history(writer, "plain"))[1] == [1, 2, 3]
    readers = Readers(ws_connect, server.ws_url, writer)
    assert await readers.recover("brief:a", 0) == ([], False)
    assert await readers.recover("brief:a", 3) == ([], True)  # missed none
    assert await publish(writer, "brief:a", 1) == [4]
    assert await readers.recover("brief:a", 3) == ([4], True)
    assert await readers.recover("brief:a", 2) == ([], False)
    assert await readers.recover("plain", 0) == ([1, 2, 3], True)

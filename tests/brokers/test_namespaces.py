"""History size and TTL per room namespace, on every backend: a node in this process on
memory, SQLite, a real Redis and a real NATS, each with the same namespaces."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
import redis.asyncio as aioredis

from roomcast.brokers.base import Draft, Publication
from roomcast.brokers.nats import NatsBroker
from roomcast.config import Settings
from roomcast.history.base import now_ms
from roomcast.history.limits import largest_size, of_settings
from roomcast.node import Node
from roomcast.policy import parse_namespaces
from roomcast.testing import RedisProcess, fake_session
from roomcast.testing_nats import NatsProcess

NAMESPACES = parse_namespaces(
    {
        "namespaces": {
            "small:*": {"history_size": 3},
            "big:*": {"history_size": 10},
            "brief:*": {"history_ttl": 60},
        }
    }
)
DEFAULT_SIZE = 5
OLD = 120_000  # ms: older than brief:*'s TTL


@pytest.fixture(params=["memory", "sqlite", "redis", "nats"])
async def node(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Node]:
    """A started node on one backend; rooms of ``small:*`` keep 3 messages, ``big:*`` 10,
    ``brief:*`` 60 s, the others 5 for ever."""
    options: dict[str, Any] = {"history": "memory"}
    if request.param == "sqlite":
        options = {"history": "sqlite", "data_dir": tmp_path / "data"}
    elif request.param == "redis":
        options["broker"] = request.getfixturevalue("redis_server").url
    elif request.param == "nats":
        options["broker"] = request.getfixturevalue("nats_server").url
    settings = Settings(history_size=DEFAULT_SIZE, namespaces=NAMESPACES, node_id="n1", **options)
    instance = Node(settings)
    await instance.start()
    wait_connected = getattr(instance.broker, "wait_connected", None)
    if wait_connected is not None:
        assert await wait_connected(10)
    yield instance
    await instance.drain()


async def publish(node: Node, room: str, count: int, age: int = 0) -> list[Publication]:
    """``count`` messages into ``room``, stamped ``age`` ms ago, one after the other."""
    stamp = now_ms() - age
    return [
        await node.broker.publish(Draft(room, msgspec.Raw(b"%d" % n), None, stamp))
        for n in range(count)
    ]


async def history(node: Node, room: str, limit: int = 100) -> list[int]:
    ok = await node.history(room, limit)
    assert ok.messages is not None
    return [json.loads(bytes(message))["offset"] for message in ok.messages]


async def epoch_of(node: Node, room: str) -> str:
    epoch = (await node.history(room, 1)).epoch
    assert epoch is not None
    return epoch


async def recover(node: Node, room: str, since: int) -> tuple[list[int], bool | None]:
    """A new session joins ``room`` from offset ``since`` of the room's epoch: the offsets
    replayed to it, and ``recovered``."""
    session, transport = await fake_session(node, "reader")
    position = {"epoch": await epoch_of(node, room), "offset": since}
    await session.handle(json.dumps({"type": "join", "room": room, "since": position, "id": 1}))
    replayed = []
    while (frame := await transport.receive())["type"] != "ok":
        if frame["type"] == "message":
            replayed.append(frame["offset"])
    assert frame["room"] == room
    return replayed, frame.get("recovered")


async def test_each_namespace_keeps_its_own_history_size(node: Node) -> None:
    for room in ("small:a", "big:a", "plain"):
        published = await publish(node, room, 12)
        assert [pub.offset for pub in published] == list(range(1, 13))
    assert await history(node, "small:a") == [10, 11, 12]
    assert await history(node, "big:a") == list(range(3, 13))
    assert await history(node, "plain") == [8, 9, 10, 11, 12]
    assert await history(node, "big:a", limit=4) == [9, 10, 11, 12]
    page = await node.broker.read("small:a", after=0, limit=100)
    assert [offset for offset, _ in page.entries] == [10, 11, 12]
    assert page.position.offset == 12
    page = await node.broker.read("big:a", before=5, limit=100)
    assert [offset for offset, _ in page.entries] == [3, 4]
    assert (await publish(node, "small:a", 1))[0].offset == 13  # the counter goes on
    assert await history(node, "small:a") == [11, 12, 13]


async def test_recovery_outside_the_rooms_window_is_refused(node: Node) -> None:
    for room in ("small:a", "big:a"):
        await publish(node, room, 12)
    assert await recover(node, "small:a", 8) == ([], False)  # 9 is gone
    assert await recover(node, "small:a", 9) == ([10, 11, 12], True)
    assert await recover(node, "small:a", 12) == ([], True)
    assert await recover(node, "big:a", 2) == (list(range(3, 13)), True)
    assert await recover(node, "big:a", 1) == ([], False)  # 2 is gone


async def test_messages_older_than_the_rooms_ttl_are_not_returned(node: Node) -> None:
    for room in ("brief:a", "plain"):
        await publish(node, room, 3, age=OLD)
        await publish(node, room, 2)
    assert await history(node, "brief:a") == [4, 5]
    assert await history(node, "plain") == [1, 2, 3, 4, 5]  # no TTL there
    page = await node.broker.read("brief:a", after=0, limit=100)
    assert [offset for offset, _ in page.entries] == [4, 5]
    assert page.position.offset == 5
    assert await recover(node, "brief:a", 2) == ([], False)
    assert await recover(node, "brief:a", 3) == ([4, 5], True)
    assert await recover(node, "plain", 2) == ([3, 4, 5], True)


async def test_an_expired_message_hides_the_older_ones(node: Node) -> None:
    """Stamps out of order (the clocks of two nodes disagree): what a reader sees is one
    run of offsets, so a recovery never skips the expired message in the middle."""
    await publish(node, "brief:a", 2)
    await publish(node, "brief:a", 1, age=OLD)  # offset 3, expired
    await publish(node, "brief:a", 2)
    assert await history(node, "brief:a") == [4, 5]
    assert await recover(node, "brief:a", 1) == ([], False)  # 2 is visible, 3 is not
    assert await recover(node, "brief:a", 3) == ([4, 5], True)


# -- what each backend stores ----------------------------------------------------------


async def test_redis_stores_each_rooms_size_and_ttl(redis_server: RedisProcess) -> None:
    settings = Settings(
        broker=redis_server.url, history_size=DEFAULT_SIZE, namespaces=NAMESPACES, node_id="n1"
    )
    node = Node(settings)
    await node.start()
    client = aioredis.from_url(redis_server.url)
    try:
        assert await node.broker.wait_connected(10)  # type: ignore[attr-defined]
        for room in ("small:a", "big:a", "plain", "brief:a"):
            await publish(node, room, 12)
        lengths = [await client.xlen(f"roomcast:{{{room}}}:log") for room in
                   ("small:a", "big:a", "plain", "brief:a")]  # fmt: skip
        assert lengths == [3, 10, 5, 5]
        assert 0 < await client.pttl("roomcast:{brief:a}:log") <= 60_000
        assert await client.pttl("roomcast:{plain}:log") == -1  # no TTL: kept
    finally:
        await client.aclose()
        await node.drain()


async def test_nats_stores_the_largest_size_and_shows_each_rooms_own(
    nats_server: NatsProcess,
) -> None:
    settings = Settings(
        broker=nats_server.url, history_size=DEFAULT_SIZE, namespaces=NAMESPACES, node_id="n1"
    )
    assert largest_size(settings) == 10
    assert of_settings(settings)("small:x") == (3, 0.0)
    broker = NatsBroker.from_settings(settings)
    await broker.connect(lambda _: None)
    try:
        for n in range(12):
            await broker.publish(Draft("small:a", msgspec.Raw(b"%d" % n), None, now_ms()))
        nc = await nats.connect(nats_server.url)
        info = await nc.jetstream().stream_info("ROOMCAST")
        await nc.close()
        assert info.config.max_msgs_per_subject == 10
        assert info.state.messages == 10  # stored: bounded by the largest size
        page = await broker.read("small:a", after=0, limit=100)
        assert [offset for offset, _ in page.entries] == [10, 11, 12]  # shown: the room's
        page = await broker.read("small:a", after=8, limit=2)
        assert [offset for offset, _ in page.entries] == [10, 11]
    finally:
        await broker.close()

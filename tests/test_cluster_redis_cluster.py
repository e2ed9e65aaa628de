"""Two roomcast nodes on a real Redis Cluster (3 masters of the test's own, on free
ports): rooms on every master, presence, recovery, and a master that dies."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from conftest import ServerFactory, WsClient
from redis.crc import key_slot

from roomcast.brokers import create_broker
from roomcast.brokers.base import Draft, Publication
from roomcast.brokers.redis import RedisBroker
from roomcast.brokers.redis_client import ClusterURL, is_cluster
from roomcast.config import Settings
from roomcast.exceptions import BrokerError, ConfigError
from roomcast.testing import RedisClusterProcess, ServerProcess

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
    reason="needs redis-server and redis-cli",
)
Connect = Callable[..., Any]


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisClusterProcess]:
    cluster = RedisClusterProcess(tmp_path / "cluster")
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def rooms_by_master(cluster: RedisClusterProcess) -> dict[int, str]:
    """A room for each master (index in ``cluster.ports`` -> room), by the hash slot of
    the room's keys (they all share the hash tag ``{room}``)."""
    slots = cluster.slot_map()
    masters = {index for _, _, index in slots}
    found: dict[int, str] = {}
    for n in itertools.count():
        room = f"room{n}"
        slot = key_slot(f"roomcast:{{{room}}}:meta".encode())
        assert slot == key_slot(f"roomcast:{{{room}}}:log".encode())
        assert slot == key_slot(f"roomcast:{{{room}}}:ch".encode())
        found.setdefault(next(i for first, last, i in slots if first <= slot <= last), room)
        if len(found) == len(masters):
            return found
    raise AssertionError("unreachable")


def nodes(factory: ServerFactory, cluster: RedisClusterProcess) -> list[ServerProcess]:
    return [
        factory(
            *("--broker", cluster.url, "--api-key", "k", "--node-id", f"node{n}"),
            *("--publish-rate", "0", "--presence-ttl", "1.5"),
        )
        for n in (1, 2)
    ]


async def api(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": "Bearer k"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, headers=headers, json=body) as answer,
    ):
        return answer.status, await answer.json()


async def frames(client: WsClient, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """The next ``count`` frames that are not presence events (another member's ``joined``
    or ``left`` reaches a member through the cluster whenever it does)."""
    got: list[dict[str, Any]] = []
    while len(got) < count:
        frame = await client.recv(timeout)
        if frame["type"] not in {"joined", "left"}:
            got.append(frame)
    return got


async def messages(client: WsClient, counts: dict[str, int]) -> dict[str, list[Any]]:
    """(offset, data) of the next messages of each room, until there are ``counts``."""
    got: dict[str, list[Any]] = {room: [] for room in counts}
    while any(len(got[room]) < count for room, count in counts.items()):
        frame = await client.until("message", 20)
        got[frame["room"]].append((frame["offset"], frame["data"]))
    return got


def member(client: WsClient, user: str) -> dict[str, str]:
    return {"session": client.welcome["session"], "user": user}


def message(room: str, epoch: str, offset: int, data: Any, sender: Any) -> dict[str, Any]:
    return {"type": "message", "room": room, "epoch": epoch, "offset": offset, "data": data,
            "from": sender}  # fmt: skip


def without_ts(frame: dict[str, Any]) -> dict[str, Any]:
    assert isinstance(frame["ts"], int)
    return {key: value for key, value in frame.items() if key != "ts"}


@needs_redis
async def test_rooms_on_every_master_cross_nodes_with_gapless_offsets(
    redis_cluster: RedisClusterProcess, server_factory: ServerFactory, ws_connect: Connect
) -> None:
    rooms = list(rooms_by_master(redis_cluster).values())
    assert len(rooms) == 3  # one room on each master
    one, two = nodes(server_factory, redis_cluster)
    alice: WsClient = await ws_connect(one.ws_url + "?name=alice", max_queue=None)
    bob: WsClient = await ws_connect(two.ws_url + "?name=bob", max_queue=None)
    names = {id(alice): "alice", id(bob): "bob"}
    users = {id(alice): member(alice, "alice"), id(bob): member(bob, "bob")}
    epochs: dict[str, str] = {}
    for room in rooms:
        joined = await alice.request(type="join", room=room, id=f"join-{room}")
        epochs[room] = joined["epoch"]
        assert joined == {"type": "ok", "id": f"join-{room}", "room": room,
                          "epoch": epochs[room], "offset": 0}  # fmt: skip
        again = await bob.request(type="join", room=room, id=f"join-{room}")
        assert again == joined
        assert await alice.until("joined", 15) == {
            "type": "joined", "room": room, "member": users[id(bob)]
        }  # fmt: skip
    # One at a time: each publish reaches both nodes before the next one.
    for room, n in itertools.product(rooms, range(1, 5)):
        sender, other = (alice, bob) if n % 2 else (bob, alice)
        await sender.send(type="publish", room=room, data={"n": n}, id=f"{room}-{n}")
        mine = sorted(await frames(sender, 2), key=lambda f: f["type"])  # message, ok
        expected = message(room, epochs[room], n, {"n": n}, users[id(sender)])
        assert without_ts(mine[0]) == expected
        assert mine[1] == {"type": "ok", "id": f"{room}-{n}", "room": room,
                           "epoch": epochs[room], "offset": n}  # fmt: skip
        (theirs,) = await frames(other, 1)
        assert theirs == mine[0]
    # All at once: both nodes publish into every room, without waiting.
    for client, room, k in itertools.product((alice, bob), rooms, range(10)):
        await client.send(
            type="publish", room=room, data=f"{names[id(client)]}:{k}", id=f"{room}/{k}"
        )
    acked: dict[tuple[str, int], str] = {}  # (room, offset) -> data
    received: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for client in (alice, bob):
        got = await frames(client, 2 * 30 + 30)  # its 30 oks, everyone's 60 messages
        for frame in got:
            if frame["type"] == "ok":
                room, k = frame["id"].split("/")
                assert frame == {"type": "ok", "id": frame["id"], "room": room,
                                 "epoch": epochs[room], "offset": frame["offset"]}  # fmt: skip
                acked[room, frame["offset"]] = f"{names[id(client)]}:{k}"
        received[id(client)] = {r: [f for f in got if f["type"] == "message" and f["room"] == r]
                                for r in rooms}  # fmt: skip
    assert sorted(acked) == sorted(itertools.product(rooms, range(5, 25)))
    for room in rooms:  # each member got each room's messages in order, gapless, the same
        mine = received[id(alice)][room]
        assert [m["offset"] for m in mine] == list(range(5, 25))
        assert mine == received[id(bob)][room]
        assert all(m["data"] == acked[room, m["offset"]] for m in mine)
        for node in (one, two):  # history over the HTTP API, on either node
            status, history = await api("GET", f"{node.http_url}/api/rooms/{room}/history")
            assert status == 200
            assert (history["room"], history["epoch"], history["offset"]) == (
                room, epochs[room], 24
            )  # fmt: skip
            assert [m["offset"] for m in history["messages"]] == list(range(1, 25))
            assert history["messages"][4:] == mine


@needs_redis
async def test_presence_spans_nodes_in_rooms_on_every_master(
    redis_cluster: RedisClusterProcess, server_factory: ServerFactory, ws_connect: Connect
) -> None:
    rooms = list(rooms_by_master(redis_cluster).values())
    one, two = nodes(server_factory, redis_cluster)
    alice: WsClient = await ws_connect(one.ws_url + "?name=alice")
    bob: WsClient = await ws_connect(two.ws_url + "?name=bob")
    alice_member, bob_member = member(alice, "alice"), member(bob, "bob")
    for room in rooms:
        await alice.request(type="join", room=room, id=1)
        await bob.request(type="join", room=room, id=2)
        assert await alice.until("joined", 15) == {
            "type": "joined", "room": room, "member": bob_member
        }  # fmt: skip
    for room, (client, node) in itertools.product(rooms, ((alice, two), (bob, one))):
        reply = await client.request(type="presence", room=room, id="who")
        assert reply["type"] == "ok"
        assert sorted(reply["members"], key=lambda m: m["user"]) == [alice_member, bob_member]
        status, presence = await api("GET", f"{node.http_url}/api/rooms/{room}/presence")
        assert status == 200
        assert sorted(presence["members"], key=lambda m: m["user"]) == [alice_member, bob_member]
    for room in rooms:
        assert await alice.request(type="leave", room=room, id="bye") == {
            "type": "ok", "id": "bye", "room": room
        }  # fmt: skip
        assert await bob.until("left", 15) == {"type": "left", "room": room, "member": alice_member}
        reply = await bob.request(type="presence", room=room, id="who")
        assert reply["members"] == [bob_member]
        status, presence = await api("GET", f"{one.http_url}/api/rooms/{room}/presence")
        assert (status, presence["members"]) == (200, [bob_member])


@needs_redis
async def test_join_since_recovers_on_the_other_node(
    redis_cluster: RedisClusterProcess, server_factory: ServerFactory, ws_connect: Connect
) -> None:
    rooms = list(rooms_by_master(redis_cluster).values())
    one, two = nodes(server_factory, redis_cluster)
    watcher: WsClient = await ws_connect(one.ws_url)
    epochs: dict[str, str] = {}
    for room in rooms:
        epochs[room] = (await watcher.request(type="join", room=room, id=0))["epoch"]
        for n in range(1, 4):
            assert (await watcher.request(type="publish", room=room, data=n, id=n))["offset"] == n
    one.stop(signal.SIGKILL)
    writer: WsClient = await ws_connect(two.ws_url)
    for room in rooms:
        await writer.request(type="join", room=room, id=0)
        for n in range(4, 7):
            reply = await writer.request(type="publish", room=room, data=n, id=n)
            assert (reply["type"], reply["offset"]) == ("ok", n)
    back: WsClient = await ws_connect(two.ws_url)  # the watcher, reconnected elsewhere
    for room in rooms:
        since = {"epoch": epochs[room], "offset": 3}
        await back.send(type="join", room=room, since=since, id=f"again-{room}")
        got = await frames(back, 4)
        assert [(f["type"], f["room"], f["offset"], f["data"]) for f in got[:3]] == [
            ("message", room, n, n) for n in (4, 5, 6)
        ]
        assert got[3] == {"type": "ok", "id": f"again-{room}", "room": room,
                          "epoch": epochs[room], "offset": 6, "recovered": True}  # fmt: skip


@needs_redis
async def test_a_dead_master_takes_down_only_its_rooms_and_loses_no_acknowledged_message(
    redis_cluster: RedisClusterProcess, server_factory: ServerFactory, ws_connect: Connect
) -> None:
    by_master = rooms_by_master(redis_cluster)
    doomed_master, doomed = next(iter(by_master.items()))
    safe = next(room for index, room in by_master.items() if index != doomed_master)
    one, two = nodes(server_factory, redis_cluster)
    writers: list[WsClient] = [await ws_connect(node.ws_url) for node in (one, two)]
    readers: list[WsClient] = [await ws_connect(node.ws_url, max_queue=None) for node in (one, two)]
    epochs: dict[str, str] = {}
    for client, room in itertools.product(writers + readers, (doomed, safe)):
        epochs[room] = (await client.request(type="join", room=room, id="join"))["epoch"]
    acked: dict[str, list[Any]] = {doomed: [], safe: []}  # data, in the order acknowledged
    ids = itertools.count()

    async def publish(room: str, writer: WsClient) -> dict[str, Any]:
        n = next(ids)
        reply = await writer.request(type="publish", room=room, data=n, id=n, timeout=15)
        if reply["type"] == "ok":
            assert reply == {"type": "ok", "id": n, "room": room, "epoch": epochs[room],
                             "offset": len(acked[room]) + 1}  # fmt: skip
            acked[room].append(n)
        return reply

    for writer, room in itertools.product(writers, (doomed, safe)):
        assert (await publish(room, writer))["type"] == "ok"
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, redis_cluster.stop, doomed_master, signal.SIGKILL)

    for writer in writers * 2:  # the dead master's room: unavailable, never ok
        reply = await publish(doomed, writer)
        assert reply == {"type": "error", "id": reply["id"], "code": "unavailable",
                         "message": reply["message"]}  # fmt: skip
    status, answer = await api("POST", two.http_url + "/api/publish", {"room": doomed, "data": 0})
    assert (status, answer["code"]) == (503, "unavailable")
    for writer in writers * 2:  # a room on another master goes on, from both nodes
        assert (await publish(safe, writer))["type"] == "ok"
    for node in (one, two):  # and the nodes stay ready: only one master's rooms are down
        status, ready = await api("GET", node.http_url + "/ready")
        assert (status, ready["broker"]) == (200, True)

    await loop.run_in_executor(None, redis_cluster.start, doomed_master)  # same port, slots
    for writer, room in itertools.product(writers, (doomed, safe)):
        assert (await publish(room, writer))["type"] == "ok"

    assert len(acked[doomed]) == 4 and len(acked[safe]) == 8
    for room in (doomed, safe):  # every acknowledged message, once, in order: nothing else
        for node in (one, two):
            status, history = await api("GET", f"{node.http_url}/api/rooms/{room}/history")
            assert status == 200
            assert [(m["offset"], m["data"]) for m in history["messages"]] == list(
                enumerate(acked[room], start=1)
            )
    for reader in readers:  # and every member got exactly those, in order
        got = await messages(reader, {room: len(data) for room, data in acked.items()})
        assert got == {room: list(enumerate(data, 1)) for room, data in acked.items()}


class Collector:
    """A broker's deliver callback that can be waited on."""

    def __init__(self) -> None:
        self.publications: list[Publication] = []
        self._changed = asyncio.Event()

    def __call__(self, batch: list[Publication]) -> None:
        self.publications.extend(batch)
        self._changed.set()

    async def wait_for(self, room: str, count: int, timeout: float = 20.0) -> list[int]:
        async with asyncio.timeout(timeout):
            while len(offsets := [p.offset for p in self.publications if p.room == room]) < count:
                self._changed.clear()
                await self._changed.wait()
        return offsets


def draft(room: str, n: int) -> Draft:
    return Draft(room, msgspec.Raw(str(n).encode()), None, 1700000000000 + n)


@needs_redis
async def test_with_replicas_a_promoted_replica_takes_over_the_rooms_of_a_dead_master(
    tmp_path: Path,
) -> None:
    cluster = RedisClusterProcess(tmp_path / "cluster", replicas=1)
    brokers: list[RedisBroker] = []
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, cluster.start)
        by_master = rooms_by_master(cluster)
        doomed_master, room = next(iter(by_master.items()))
        collector = Collector()
        for deliver in (collector, Collector()):
            broker = RedisBroker(cluster.url)
            brokers.append(broker)
            await broker.connect(deliver)
            assert await broker.wait_connected(15)
        subscriber, publisher = brokers
        await subscriber.subscribe(room)
        acked = [(await publisher.publish(draft(room, n))).offset for n in range(1, 4)]
        await loop.run_in_executor(None, cluster.wait_replicated)
        await loop.run_in_executor(None, cluster.stop, doomed_master, signal.SIGKILL)
        with pytest.raises(BrokerError, match="not stored"):
            await publisher.publish(draft(room, 0))  # no master for the room now
        await loop.run_in_executor(None, cluster.wait_failover, doomed_master)
        assert publisher._shards is not None
        await publisher._shards.refresh()  # as its link to the dead master does, in time
        acked += [(await publisher.publish(draft(room, n))).offset for n in range(4, 7)]
        assert acked == [1, 2, 3, 4, 5, 6]  # the replica had every acknowledged message
        # The subscriber's link moved the room to the new master and caught it up.
        assert await collector.wait_for(room, 6) == [1, 2, 3, 4, 5, 6]
        assert [p.payload for p in collector.publications] == [
            entry for _, entry in (await publisher.read(room, after=0, limit=10)).entries
        ]
    finally:
        for broker in brokers:
            await broker.close()
        cluster.stop()


def test_cluster_urls_are_parsed() -> None:
    plain = ClusterURL.parse("redis+cluster://127.0.0.1:7000,127.0.0.1:7001")
    assert plain.nodes == [("127.0.0.1", 7000), ("127.0.0.1", 7001)]
    assert plain.options == {}
    tls = ClusterURL.parse("rediss+cluster://app:p%40ss@redis-a.internal:6380,[::1]:7002,b/0")
    assert tls.nodes == [("redis-a.internal", 6380), ("::1", 7002), ("b", 6379)]
    assert tls.options == {"ssl": True, "username": "app", "password": "p@ss"}
    assert tls.node_options()["socket_timeout"] == 5.0
    for bad in (
        "redis+cluster://",
        "redis+cluster://h:0",
        "redis+cluster://h:port",
        "redis+cluster://h:1,,h:2",
        "redis+cluster://h:1/2",
        "redis+cluster://h:1?protocol=3",
        "redis://h:1/0",
    ):
        with pytest.raises(ConfigError):
            ClusterURL.parse(bad)
    assert is_cluster("redis+cluster://h:1") and is_cluster("rediss+cluster://h:1")
    assert not is_cluster("redis://h:1/0") and not is_cluster("rediss://h:1/0")


async def test_a_cluster_url_selects_the_cluster_broker_with_sharded_pubsub() -> None:
    broker = create_broker(Settings(broker="redis+cluster://127.0.0.1:1,127.0.0.1:2"))
    try:
        assert isinstance(broker, RedisBroker)
        assert (broker.cluster, broker.sharded) == (True, True)
        assert not broker.available  # nothing was reached yet
    finally:
        await broker.close()
    standalone = create_broker(Settings(broker="redis://127.0.0.1:1/0"))
    try:
        assert isinstance(standalone, RedisBroker)
        assert (standalone.cluster, standalone.sharded) == (False, False)
    finally:
        await standalone.close()

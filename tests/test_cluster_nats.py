"""Two nodes as one cluster through NATS with JetStream: real servers and sockets."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from conftest import ServerFactory, WsClient

from roomcast.testing import ServerProcess
from roomcast.testing_nats import NatsProcess, nats_server_binary

pytestmark = pytest.mark.skipif(nats_server_binary() is None, reason="needs nats-server")
Connect = Callable[..., Any]


def cluster(factory: ServerFactory, nats: NatsProcess, count: int = 2) -> list[ServerProcess]:
    return [
        factory(
            *("--broker", nats.url, "--api-key", "k", "--node-id", f"node{n}"),
            *("--publish-rate", "0", "--presence-ttl", "1.5"),
        )
        for n in range(1, count + 1)
    ]


async def api(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": "Bearer k"}
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, headers=headers, json=body) as answer,
    ):
        return answer.status, await answer.json()


async def event_about(client: WsClient, kind: str, user: str, timeout: float) -> dict[str, Any]:
    """The next ``joined`` or ``left`` frame about ``user``, skipping other frames."""
    async with asyncio.timeout(timeout):
        while True:
            frame = await client.recv(timeout)
            if frame["type"] == kind and frame["member"]["user"] == user:
                return frame


async def test_two_nodes_over_nats_share_rooms_and_recovery(
    server_factory: ServerFactory, nats_server: NatsProcess, ws_connect: Connect
) -> None:
    one, two = (
        server_factory("--broker", nats_server.url, "--node-id", n, "--publish-rate", "0")
        for n in ("n1", "n2")
    )
    alice: WsClient = await ws_connect(one.ws_url + "?name=alice")
    bob: WsClient = await ws_connect(two.ws_url + "?name=bob")
    epoch = (await alice.request(type="join", room="lobby", id=1))["epoch"]
    assert (await bob.request(type="join", room="lobby", id=1))["epoch"] == epoch
    for n in range(1, 5):
        await (alice if n % 2 else bob).send(type="publish", room="lobby", data=n, id=n)
    for client in (alice, bob):
        got = [await client.until("message") for _ in range(4)]
        assert [m["offset"] for m in got] == [1, 2, 3, 4]
        assert sorted(m["data"] for m in got) == [1, 2, 3, 4]
    one.stop(signal.SIGKILL)
    for n in range(5, 8):  # stored before alice comes back
        assert (await bob.request(type="publish", room="lobby", data=n, id=n))["offset"] == n
    back: WsClient = await ws_connect(two.ws_url)  # alice, reconnected to the other node
    await back.send(type="join", room="lobby", since={"epoch": epoch, "offset": 4}, id="again")
    frames = [await back.recv() for _ in range(4)]
    assert [f["offset"] for f in frames[:3]] == [5, 6, 7]
    assert frames[3]["recovered"] is True


async def test_presence_and_its_events_span_the_cluster(
    server_factory: ServerFactory, nats_server: NatsProcess, ws_connect: Connect
) -> None:
    one, two = cluster(server_factory, nats_server)
    alice: WsClient = await ws_connect(one.ws_url + "?name=alice")
    bob: WsClient = await ws_connect(two.ws_url + "?name=bob")
    await alice.request(type="join", room="p.1", id=1)  # a dot: not a subject token
    await bob.request(type="join", room="p.1", id=1)
    bob_member = {"session": bob.welcome["session"], "user": "bob"}
    alice_member = {"session": alice.welcome["session"], "user": "alice"}
    assert await alice.until("joined") == {"type": "joined", "room": "p.1", "member": bob_member}
    for client in (alice, bob):
        reply = await client.request(type="presence", room="p.1", id=2)
        assert sorted(reply["members"], key=lambda m: m["user"]) == [alice_member, bob_member]
    for node in (one, two):
        status, presence = await api("GET", node.http_url + "/api/rooms/p.1/presence")
        assert status == 200
        assert sorted(presence["members"], key=lambda m: m["user"]) == [alice_member, bob_member]
    await alice.request(type="leave", room="p.1", id=3)
    assert await bob.until("left") == {"type": "left", "room": "p.1", "member": alice_member}
    reply = await bob.request(type="presence", room="p.1", id=4)
    assert reply["members"] == [bob_member]
    status, presence = await api("GET", one.http_url + "/api/rooms/p.1/presence")
    assert (status, presence) == (200, {"room": "p.1", "members": [bob_member]})


async def test_members_of_a_killed_node_expire_and_are_announced_once(
    server_factory: ServerFactory, nats_server: NatsProcess, ws_connect: Connect
) -> None:
    one, two, three = cluster(server_factory, nats_server, count=3)
    survivors: list[WsClient] = [
        await ws_connect(node.ws_url + f"?name={name}")
        for node, name in ((two, "s2"), (three, "s3"))
    ]
    for survivor in survivors:
        await survivor.request(type="join", room="p", id=1)
    doomed: WsClient = await ws_connect(one.ws_url + "?name=doomed")
    await doomed.request(type="join", room="p", id=1)
    for survivor in survivors:  # announced after it was stored: the store knows doomed
        await event_about(survivor, "joined", "doomed", timeout=10)
    one.stop(signal.SIGKILL)  # no goodbye: its members stay until their TTL (1.5 s) ends
    expected = {
        "type": "left", "room": "p",
        "member": {"session": doomed.welcome["session"], "user": "doomed"},
    }  # fmt: skip
    for survivor in survivors:  # both nodes sweep the room; one of them announces it
        assert await event_about(survivor, "left", "doomed", timeout=15) == expected

    async def no_second_left(survivor: WsClient) -> None:
        with pytest.raises(TimeoutError):  # a few sweeps of both nodes: nobody announces it
            await event_about(survivor, "left", "doomed", timeout=2.0)

    await asyncio.gather(*map(no_second_left, survivors))
    for survivor in survivors:
        reply = await survivor.request(type="presence", room="p", id=2)
        assert sorted(m["user"] for m in reply["members"]) == ["s2", "s3"]


async def test_nats_restart_loses_no_acknowledged_message(
    server_factory: ServerFactory, nats_server: NatsProcess, ws_connect: Connect
) -> None:
    one, two = cluster(server_factory, nats_server)
    # readers[0] is the test's clock (its frames are consumed while waiting); 1 and 2 are
    # checked at the end, one on each node.
    readers: list[WsClient] = [await ws_connect(s.ws_url, max_queue=None) for s in (one, one, two)]
    for reader in readers:
        await reader.request(type="join", room="r", id=0)
    writers: list[WsClient] = [await ws_connect(s.ws_url, max_queue=None) for s in (one, two)]
    for writer in writers:
        await writer.request(type="join", room="r", id=0)
    asker: WsClient = await ws_connect(two.ws_url)  # in a room of its own: only replies
    await asker.request(type="join", room="q", id=0)
    acked: list[int] = []
    refused = asyncio.Event()
    stop = asyncio.Event()

    async def publish_until_stopped(writer: WsClient, tag: str) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            reply = await writer.request(type="publish", room="r", data=f"{tag}{n}", id=n)
            if reply["type"] == "ok":
                acked.append(reply["offset"])
            else:
                assert reply["code"] == "unavailable"  # an answer, never a silent drop
                refused.set()

    async def acks_reach(count: int) -> None:
        async with asyncio.timeout(30):
            while len(acked) < count:
                frame = await readers[0].recv(15)  # every ack is preceded by messages: a clock
                assert frame["type"] != "left"

    tasks = [
        asyncio.create_task(publish_until_stopped(w, t)) for w, t in zip(writers, "ab", strict=True)
    ]
    await acks_reach(30)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, nats_server.stop)
    await asyncio.wait_for(refused.wait(), 15)  # publishing while NATS is down: unavailable
    reply = await asker.request(type="presence", room="q", id=1, timeout=15)
    assert (reply["type"], reply["code"]) == ("error", "unavailable")
    await asyncio.sleep(2)  # down for longer than the presence TTL: every entry expires
    await loop.run_in_executor(None, nats_server.start)  # the same port and JetStream store
    before_restart = len(acked)
    await acks_reach(before_restart + 30)  # publishing goes on after NATS is back
    stop.set()
    await asyncio.gather(*tasks)
    await every_ack_stored_and_delivered(one, acked, readers[1:])  # readers[0]: the clock
    reply = await writers[1].request(type="presence", room="r", id="who")
    assert len(reply["members"]) == 5  # the readers and writers of both nodes, still there


async def every_ack_stored_and_delivered(
    node: ServerProcess, acked: list[int], readers: list[WsClient]
) -> None:
    """A publish cut off by the restart may be stored without its ok reaching the client
    (it then answered `unavailable`): every ok is for a stored message, never the reverse;
    every reader got every stored message once, in order, and no `left`."""
    status, position = await api("GET", node.http_url + "/api/rooms/r/history?limit=1")
    assert status == 200
    top = position["offset"]
    assert len(set(acked)) == len(acked)
    assert set(acked) <= set(range(1, top + 1))
    assert len(acked) >= top - 4  # at most the in-flight publishes (2 writers) are in doubt
    for reader in readers:
        offsets: list[int] = []
        while not offsets or offsets[-1] < top:
            frame = await reader.recv(15)
            assert frame["type"] != "left"  # no live member expired while NATS was away
            if frame["type"] == "message":
                offsets.append(frame["offset"])
        assert offsets == list(range(1, top + 1))

"""Two nodes as one cluster through NATS with JetStream: real servers and sockets."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerFactory, WsClient

from roomcast.testing_nats import NatsProcess, nats_server_binary

pytestmark = pytest.mark.skipif(nats_server_binary() is None, reason="needs nats-server")
Connect = Callable[..., Any]


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsProcess]:
    server = NatsProcess(tmp_path / "nats").start()
    yield server
    server.close()


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

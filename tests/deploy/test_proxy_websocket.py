"""WebSocket through nginx and HAProxy (HTTP and TCP mode) in front of two nodes: the
upgrade passes (101), and two clients that landed on different nodes talk."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from conftest import WsClient

from .helpers import NODES, Proxied, new_room, without_ts

Connect = Callable[..., Any]


@dataclass
class Peer:
    client: WsClient
    user: str

    @property
    def member(self) -> dict[str, str]:
        return {"session": self.client.welcome["session"], "user": self.user}


async def on_both_nodes(proxy: Proxied, ws_connect: Connect) -> dict[str, Peer]:
    """Connect through the proxy until there is a client on each node (round robin
    alternates, so two connections are usually enough); {node: peer}."""
    peers: dict[str, Peer] = {}
    for n in range(6):
        client: WsClient = await ws_connect(f"{proxy.ws_url}?name=user{n}", proxy=None)
        assert client.ws.response is not None
        assert client.ws.response.status_code == 101  # the upgrade went through
        assert client.welcome["heartbeat"] == 1
        peers.setdefault(client.welcome["node"], Peer(client, f"user{n}"))
        if len(peers) == len(NODES):
            return peers
    raise AssertionError(f"six connections through {proxy.kind} all landed on {set(peers)}")


async def publish(sender: WsClient, room: str, data: Any, command_id: int) -> tuple[Any, Any]:
    """Publish; the sender's ``ok`` and its own copy of the message (either may come
    first)."""
    await sender.send(type="publish", room=room, data=data, id=command_id)
    ok = message = None
    while ok is None or message is None:
        frame = await sender.recv(10)
        if frame["type"] == "ok" and frame.get("id") == command_id:
            ok = frame
        elif frame["type"] == "message":
            message = frame
        else:
            assert frame["type"] in {"joined", "left"}, frame
    return ok, message


async def next_message(client: WsClient) -> dict[str, Any]:
    """The next ``message``, past presence events: a ``joined`` published by one node just
    before a client of another node joined may reach that client just after."""
    while True:
        frame = await client.recv(10)
        if frame["type"] == "message":
            return frame
        assert frame["type"] in {"joined", "left"}, frame


async def test_two_clients_on_different_nodes_talk_through_the_proxy(
    proxy: Proxied, ws_connect: Connect
) -> None:
    peers = await on_both_nodes(proxy, ws_connect)
    one, two = peers["node1"], peers["node2"]
    room = new_room()
    joined = await one.client.request(type="join", room=room, id=1)
    epoch = joined["epoch"]
    assert joined == {"type": "ok", "id": 1, "room": room, "epoch": epoch, "offset": 0}
    assert await two.client.request(type="join", room=room, id=1) == joined
    announced = await one.client.until("joined", 10)  # from node2, through Redis
    assert announced == {"type": "joined", "room": room, "member": two.member}

    texts = {1: "from node1", 2: "from node2", 3: "node1 again"}
    for offset, text in texts.items():
        sender, receiver = (one, two) if offset % 2 else (two, one)
        ok, own = await publish(sender.client, room, {"text": text}, 10 + offset)
        assert ok == {"type": "ok", "id": 10 + offset, "room": room, "epoch": epoch,
                      "offset": offset}  # fmt: skip
        expected = {
            "type": "message", "room": room, "epoch": epoch, "offset": offset,
            "data": {"text": text},
            "from": sender.member,
        }  # fmt: skip
        assert without_ts(own) == expected
        assert without_ts(await next_message(receiver.client)) == expected  # the other node

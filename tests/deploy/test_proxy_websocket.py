"""WebSocket through nginx and HAProxy (HTTP and TCP mode) in front of two nodes: the
upgrade passes (101), and two clients that landed on different nodes talk."""

from __future__ import annotations

from .helpers import Connect, Proxied, new_room, next_message, on_both_nodes, publish, without_ts


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

"""A deploy behind each proxy: one node gets SIGTERM (as a rolling restart does). Its
WebSocket clients are closed with 1012, reconnect through the proxy, land on the other
node at once (the proxy retries a refused connection on the next node, before any
health check has noticed), and recover what was published meanwhile."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest
from websockets.exceptions import ConnectionClosed

from roomcast.testing import ServerProcess

from .conftest import KINDS, start_proxy
from .helpers import Connect, new_room, next_message, on_both_nodes, poll, publish, without_ts


@pytest.mark.parametrize("kind", KINDS)
async def test_a_stopped_nodes_clients_reconnect_to_the_other_node(
    kind: str,
    spare_cluster: list[ServerProcess],
    tmp_path: Path,
    ws_connect: Connect,
    http: aiohttp.ClientSession,
) -> None:
    node1 = spare_cluster[0]
    proxied = start_proxy(kind, tmp_path / kind, spare_cluster)
    try:
        peers = await on_both_nodes(proxied, ws_connect)
        leaving, staying = peers["node1"], peers["node2"]
        room = new_room()
        epoch = (await leaving.client.request(type="join", room=room, id=1))["epoch"]
        await staying.client.request(type="join", room=room, id=1)
        ack, _ = await publish(staying.client, room, "before", 2)
        assert ack["offset"] == 1
        assert (await next_message(leaving.client))["offset"] == 1

        code = await asyncio.get_running_loop().run_in_executor(None, node1.stop)
        assert code == 0
        with pytest.raises(ConnectionClosed) as closed:
            while True:  # presence events may come before the close
                await leaving.client.recv(15)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1012  # service restart: reconnect

        for offset in (2, 3):
            ack, _ = await publish(staying.client, room, f"while away {offset}", 10 + offset)
            assert ack["offset"] == offset

        # Every new connection lands on node2, none fails.
        clients = [await ws_connect(f"{proxied.ws_url}?name=back{n}", proxy=None) for n in range(4)]
        assert [client.welcome["node"] for client in clients] == ["node2"] * 4
        back = clients[0]
        since = {"epoch": epoch, "offset": 1}
        await back.send(type="join", room=room, since=since, id="again")
        replayed = [await next_message(back) for _ in range(2)]
        assert [without_ts(m) for m in replayed] == [
            {"type": "message", "room": room, "epoch": epoch, "offset": offset,
             "data": f"while away {offset}", "from": staying.member}
            for offset in (2, 3)
        ]  # fmt: skip
        assert await back.until("ok") == {
            "type": "ok", "id": "again", "room": room, "epoch": epoch, "offset": 3,
            "recovered": True,
        }  # fmt: skip
        if proxied.l7:  # and every poll, each balanced on its own
            answers = [await poll(http, proxied.url, rooms=room) for _ in range(4)]
            assert [answer["node"] for answer in answers] == ["node2"] * 4
    finally:
        proxied.process.stop()
        if node1.process is None:
            node1.start(timeout=30)

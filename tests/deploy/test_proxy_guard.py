"""The guard of the client endpoints through each proxy, set up as docs/deploy.md says: a
page of the proxy's own origin connects (the proxy passes the browser's Host header on),
a page of another site does not; and behind nginx or HAProxy in HTTP mode, a node
started with --trusted-proxies counts each client by the address the proxy saw,
whatever X-Forwarded-For the client sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
from websockets.typing import Origin

from roomcast.testing import ServerProcess

from .conftest import L7_KINDS, start_proxy
from .helpers import Connect, Proxied

EVIL = Origin("https://evil.example")


async def refused(url: str, **kwargs: Any) -> tuple[int, str]:
    """(status, error code) of a WebSocket handshake the node refuses."""
    with pytest.raises(websockets.InvalidStatus) as refusal:
        await websockets.connect(url, proxy=None, **kwargs)
    response = refusal.value.response
    return response.status_code, json.loads(response.body)["code"]


async def test_a_page_of_the_proxys_origin_connects_through_it(
    proxy: Proxied, ws_connect: Connect, http: aiohttp.ClientSession
) -> None:
    own = Origin(proxy.url)  # the page was served by the proxy: http://127.0.0.1:PORT
    client = await ws_connect(proxy.ws_url, origin=own, proxy=None)
    assert client.welcome["type"] == "welcome"
    assert await refused(proxy.ws_url, origin=EVIL) == (403, "forbidden")
    async with http.get(proxy.url + "/poll?rooms=lobby", headers={"Origin": own}) as first:
        assert first.status == 200
        token = (await first.json())["session"]
    ping = {"type": "ping", "id": 1}
    for origin, answer in ((own, (200, "pong")), (EVIL, (403, "error"))):
        async with http.post(
            proxy.url + "/send", params={"session": token}, json=ping, headers={"Origin": origin}
        ) as sent:
            assert (sent.status, (await sent.json())["type"]) == answer


@pytest.mark.parametrize("kind", L7_KINDS)
async def test_nodes_behind_a_trusted_proxy_count_the_clients_address(
    kind: str, tmp_path: Path, ws_connect: Connect
) -> None:
    args = [
        "--history",
        "memory",
        "--trusted-proxies",
        "127.0.0.1",
        "--max-connections-per-ip",
        "1",
    ]
    nodes = [ServerProcess(args), ServerProcess(args)]
    try:
        for node in nodes:
            node.start()
        proxied = start_proxy(kind, tmp_path / kind, nodes)
        try:
            await fill_both_nodes(proxied, ws_connect)
            forged = {"X-Forwarded-For": "203.0.113.9"}  # the proxy appends 127.0.0.3 to it
            assert await refused(
                proxied.ws_url, local_addr=("127.0.0.3", 0), additional_headers=forged
            ) == (429, "rate_limited")
            other = await ws_connect(proxied.ws_url, proxy=None, local_addr=("127.0.0.4", 0))
            assert other.welcome["type"] == "welcome"
        finally:
            proxied.process.stop()
    finally:
        for node in nodes:
            node.close()


async def fill_both_nodes(proxied: Proxied, ws_connect: Connect) -> None:
    """Connect from 127.0.0.3 until each node holds one connection from it (the proxy
    reaches the nodes from 127.0.0.1, the one trusted address): a connection that lands
    on a node that already has one is refused there with 429, and the next one tries
    again."""
    held: set[str] = set()
    for _ in range(10):
        try:
            client = await ws_connect(proxied.ws_url, proxy=None, local_addr=("127.0.0.3", 0))
        except websockets.InvalidStatus as refusal:
            assert refusal.response.status_code == 429
            continue
        assert client.welcome["node"] not in held
        held.add(client.welcome["node"])
        if len(held) == 2:
            return
    raise AssertionError(f"ten connections through {proxied.kind} reached only {held}")

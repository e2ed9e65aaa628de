"""The guard of /ws, /sse, /poll, POST /send and /echo against a real server: origins,
client addresses behind trusted proxies, connection limits, connect rate and the
handshake timeout. Every refusal is a JSON error given before any upgrade or stream."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import websockets
from conftest import ServerFactory, WsClient
from websockets.typing import Origin

from roomcast.testing import ServerProcess

Connect = Any  # the ws_connect fixture
EVIL = Origin("https://evil.example")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        yield session


def error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message}


def own_origin(server: ServerProcess) -> Origin:
    return Origin(f"http://127.0.0.1:{server.port}")


def origin_refused(origin: str) -> dict[str, Any]:
    return error(
        "forbidden",
        f"origin {origin!r} may not connect (allowed: this server's own origin; "
        "see --allowed-origins)",
    )


FULL = error("unavailable", "the server is full (2 connections): try again later")
MINE_FULL = error(
    "rate_limited", "too many connections from your address (2 open): close one or try again later"
)


async def ws_refused(url: str, **kwargs: Any) -> tuple[int, dict[str, Any], str | None]:
    """(status, JSON body, Retry-After) of a refused WebSocket handshake (no 101)."""
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(url, **kwargs)
    response = refused.value.response
    assert response.headers["Content-Type"] == "application/json"
    return response.status_code, json.loads(response.body), response.headers.get("Retry-After")


async def answer(
    http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
) -> tuple[int, dict[str, Any], str | None]:
    """(status, JSON body, Retry-After) of a request answered with JSON."""
    async with http.request(method, url, **kwargs) as reply:
        assert reply.content_type == "application/json", await reply.text()
        return reply.status, await reply.json(), reply.headers.get("Retry-After")


async def first_poll(http: aiohttp.ClientSession, server: ServerProcess, **kwargs: Any) -> Any:
    status, body, _ = await answer(http, "GET", server.http_url + "/poll?rooms=lobby", **kwargs)
    assert (status, body["events"][0]["type"]) == (200, "welcome"), body
    return body


async def open_sse(
    http: aiohttp.ClientSession, server: ServerProcess, **kwargs: Any
) -> aiohttp.ClientResponse:
    """An SSE stream, once its first event came (the server's handler runs)."""
    response = await http.get(server.http_url + "/sse?rooms=lobby", **kwargs)
    assert (response.status, response.content_type) == (200, "text/event-stream")
    assert await asyncio.wait_for(response.content.readline(), 5) == b"event: welcome\n"
    return response


async def wait_for_probe(
    http: aiohttp.ClientSession, server: ServerProcess, status: int, **kwargs: Any
) -> None:
    """Until a poll with a bad session token gets ``status``: 503/429 once the guard
    counts a connection that is still on its way, 401 (the guard let it through, and
    it ends at once) once one that ended is released."""
    url = server.http_url + "/poll?session=probe"
    async with asyncio.timeout(10):
        while True:
            got, _, _ = await answer(http, "GET", url, **kwargs)
            if got == status:
                return
            await asyncio.sleep(0.02)


# -- origins --------------------------------------------------------------------------


async def test_a_cross_origin_websocket_is_refused_before_the_upgrade(
    server_factory: ServerFactory, ws_connect: Connect
) -> None:
    server = server_factory("--history", "memory", "--enable-echo")
    for path in ("/ws", "/echo"):
        url = f"ws://127.0.0.1:{server.port}{path}"
        assert await ws_refused(url, origin=EVIL) == (403, origin_refused(EVIL), None)
        assert await ws_refused(url, origin=Origin("null")) == (403, origin_refused("null"), None)
        # the same request from a page of this server is upgraded
        async with websockets.connect(url, origin=own_origin(server)) as ws:
            assert ws.response is not None
            assert ws.response.status_code == 101
    other_host = Origin(f"http://localhost:{server.port}")  # the same server under another name
    assert await ws_refused(server.ws_url, origin=other_host) == (
        403, origin_refused(other_host), None,
    )  # fmt: skip
    client: WsClient = await ws_connect(server.ws_url)  # no Origin: not a browser
    assert client.welcome["type"] == "welcome"


async def test_a_cross_origin_stream_poll_or_send_is_refused(
    server_factory: ServerFactory, http: aiohttp.ClientSession
) -> None:
    server = server_factory("--history", "memory", "--api-key", "test-key")
    token = (await first_poll(http, server))["session"]
    evil = {"Origin": EVIL}
    base = server.http_url
    refused = (403, origin_refused(EVIL), None)
    assert await answer(http, "GET", base + "/sse?rooms=lobby", headers=evil) == refused
    assert await answer(http, "GET", base + "/poll?rooms=lobby", headers=evil) == refused
    ping = json.dumps({"type": "ping", "id": 1})
    send = f"{base}/send?session={token}"
    assert await answer(http, "POST", send, data=ping, headers=evil) == refused
    # the same requests from a page of this server
    own = {"Origin": own_origin(server)}
    (await open_sse(http, server, headers=own)).close()
    await first_poll(http, server, headers=own)
    assert await answer(http, "POST", send, data=ping, headers=own) == (
        200, {"type": "pong", "id": 1}, None,
    )  # fmt: skip
    # the HTTP API and the pages are not guarded: backends and links come from anywhere
    publish = {"room": "lobby", "data": 1}
    key = {"Origin": EVIL, "Authorization": "Bearer test-key"}
    status, body, _ = await answer(http, "POST", base + "/api/publish", json=publish, headers=key)
    assert (status, body["offset"]) == (200, 1)
    async with http.get(base + "/", headers=evil) as page:
        assert page.status == 200


async def test_allowed_origin_patterns(server_factory: ServerFactory) -> None:
    server = server_factory(
        "--history", "memory", "--allowed-origins", "https://*.example.com, capacitor://localhost"
    )
    for origin in ("https://app.example.com", "https://a.b.example.com", "capacitor://localhost"):
        async with websockets.connect(server.ws_url, origin=Origin(origin)) as ws:
            assert ws.response is not None
            assert ws.response.status_code == 101
    allowed = "https://*.example.com, capacitor://localhost"
    for origin in ("https://example.com", "http://app.example.com", own_origin(server), "null"):
        assert await ws_refused(server.ws_url, origin=Origin(origin)) == (
            403,
            error(
                "forbidden",
                f"origin {origin!r} may not connect (allowed: {allowed}; see --allowed-origins)",
            ),
            None,
        )


async def test_any_origin_even_null(server_factory: ServerFactory) -> None:
    server = server_factory("--history", "memory", "--allowed-origins", "*")
    for origin in ("null", EVIL):
        async with websockets.connect(server.ws_url, origin=Origin(origin)) as ws:
            assert json.loads(await ws.recv())["type"] == "welcome"


# -- connection limits ----------------------------------------------------------------


async def test_the_node_limit_counts_websockets_streams_and_pending_polls(
    server_factory: ServerFactory, http: aiohttp.ClientSession, ws_connect: Connect
) -> None:
    server = server_factory("--history", "memory", "--max-connections", "2")
    poll = await first_poll(http, server)  # a session for POST /send; its poll is over
    send = f"{server.http_url}/send?session={poll['session']}"
    ws: WsClient = await ws_connect(server.ws_url)
    stream = await open_sse(http, server)
    full = (503, FULL, "5")
    assert await ws_refused(server.ws_url) == full
    assert await answer(http, "GET", server.http_url + "/sse?rooms=lobby") == full
    assert await answer(http, "GET", server.http_url + "/poll?rooms=lobby") == full
    # POST /send is no connection: the clients of the node still send their commands
    ping = json.dumps({"type": "ping", "id": 1})
    assert await answer(http, "POST", send, data=ping) == (200, {"type": "pong", "id": 1}, None)

    await ws.ws.close()
    await wait_for_probe(http, server, 401)  # the WebSocket's place is free again
    params = {"session": poll["session"], "cursor": poll["cursor"], "timeout": "10"}
    pending = asyncio.create_task(answer(http, "GET", server.http_url + "/poll", params=params))
    await wait_for_probe(http, server, 503)  # the pending poll holds the second place
    assert await ws_refused(server.ws_url) == full
    publish = json.dumps({"type": "publish", "room": "lobby", "data": {"n": 1}, "id": 2})
    status, _, _ = await answer(http, "POST", send, data=publish)
    assert status == 200
    status, body, _ = await asyncio.wait_for(pending, 10)  # the message ends the poll
    assert (status, [event["data"] for event in body["events"]]) == (200, [{"n": 1}])
    await wait_for_probe(http, server, 401)
    assert (await ws_connect(server.ws_url)).welcome["type"] == "welcome"
    assert await ws_refused(server.ws_url) == full
    stream.close()
    await wait_for_probe(http, server, 401)
    assert (await ws_connect(server.ws_url)).welcome["type"] == "welcome"


async def test_the_limit_per_client_address_behind_a_trusted_proxy(
    server_factory: ServerFactory, http: aiohttp.ClientSession, ws_connect: Connect
) -> None:
    server = server_factory(
        "--history", "memory", "--max-connections-per-ip", "2", "--trusted-proxies", "127.0.0.1"
    )
    alice = {"X-Forwarded-For": "203.0.113.7"}
    ws: WsClient = await ws_connect(server.ws_url, additional_headers=alice)
    stream = await open_sse(http, server, headers=alice)
    mine_full = (429, MINE_FULL, "5")
    assert await ws_refused(server.ws_url, additional_headers=alice) == mine_full
    sse, poll = server.http_url + "/sse?rooms=lobby", server.http_url + "/poll?rooms=lobby"
    assert await answer(http, "GET", sse, headers=alice) == mine_full
    assert await answer(http, "GET", poll, headers=alice) == mine_full
    # a forged address in front of hers changes nothing: the proxy appended hers last
    forged = {"X-Forwarded-For": "198.51.100.99, 203.0.113.7"}
    assert await ws_refused(server.ws_url, additional_headers=forged) == mine_full
    # another client behind the same proxy is another address
    bob = {"X-Forwarded-For": "203.0.113.8"}
    assert (await ws_connect(server.ws_url, additional_headers=bob)).welcome["type"] == "welcome"
    await first_poll(http, server, headers=bob)
    stream.close()
    await ws.ws.close()
    await wait_for_probe(http, server, 401, headers=alice)
    await first_poll(http, server, headers=alice)
    assert (await ws_connect(server.ws_url, additional_headers=alice)).welcome["type"] == "welcome"


async def test_without_trusted_proxies_x_forwarded_for_is_ignored(
    server_factory: ServerFactory, ws_connect: Connect
) -> None:
    server = server_factory("--history", "memory", "--max-connections-per-ip", "1")
    await ws_connect(server.ws_url, additional_headers={"X-Forwarded-For": "203.0.113.7"})
    status, body, retry = await ws_refused(
        server.ws_url, additional_headers={"X-Forwarded-For": "203.0.113.8"}
    )
    assert (status, body["code"], retry) == (429, "rate_limited", "5")


# -- connect rate ---------------------------------------------------------------------


async def test_the_connect_rate_per_client_address(
    server_factory: ServerFactory, http: aiohttp.ClientSession, ws_connect: Connect
) -> None:
    server = server_factory(
        "--history", "memory", "--connect-rate", "1", "--connect-burst", "2",
        "--trusted-proxies", "127.0.0.1",
    )  # fmt: skip
    too_fast = (
        429,
        error(
            "rate_limited",
            "too many new connections from your address (more than 1 a second): try again later",
        ),
        "1",
    )
    alice, bob, carol = ({"X-Forwarded-For": f"203.0.113.{n}"} for n in (1, 2, 3))
    (await open_sse(http, server, headers=bob)).close()
    await first_poll(http, server, headers=bob)
    assert await answer(http, "GET", server.http_url + "/sse?rooms=lobby", headers=bob) == too_fast
    poll = await first_poll(http, server, headers=carol)
    await first_poll(http, server, headers=carol)
    url = server.http_url + "/poll?rooms=lobby"
    assert await answer(http, "GET", url, headers=carol) == too_fast
    # the polls of a session are not new connections: as many as the client needs
    params = {"session": poll["session"], "cursor": poll["cursor"], "timeout": "0"}
    for _ in range(5):
        status, _, _ = await answer(
            http, "GET", server.http_url + "/poll", params=params, headers=carol
        )
        assert status == 200

    await ws_connect(server.ws_url, additional_headers=alice)
    await ws_connect(server.ws_url, additional_headers=alice)
    started = time.monotonic()
    assert await ws_refused(server.ws_url, additional_headers=alice) == too_fast
    # a second later she has a token again (the time it takes is what is tested)
    await asyncio.sleep(max(0.0, started + 1.05 - time.monotonic()))
    assert (await ws_connect(server.ws_url, additional_headers=alice)).welcome["type"] == "welcome"
    assert await ws_refused(server.ws_url, additional_headers=alice) == too_fast


# -- handshake timeout ----------------------------------------------------------------


async def closed_after(sock: socket.socket, bound: float) -> float:
    """Seconds until the server closes ``sock`` (EOF or a reset), at most ``bound``."""
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    async with asyncio.timeout(bound):
        while True:
            try:
                if not await loop.sock_recv(sock, 4096):
                    break
            except ConnectionResetError:
                break
    return time.monotonic() - started


def raw_connection(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.setblocking(False)
    return sock


async def test_a_connection_that_sends_no_request_is_closed(
    server_factory: ServerFactory, ws_connect: Connect
) -> None:
    server = server_factory("--history", "memory", "--handshake-timeout", "1")
    ws: WsClient = await ws_connect(server.ws_url)
    with raw_connection(server) as silent:
        assert 0.8 < await closed_after(silent, 5) < 3
    # the WebSocket that sent its request at once is still open, past the timeout
    assert await ws.request(type="ping", id=1) == {"type": "pong", "id": 1}


async def test_a_slowloris_is_closed_however_it_trickles(server_factory: ServerFactory) -> None:
    server = server_factory("--history", "memory", "--handshake-timeout", "1")
    loop = asyncio.get_running_loop()
    with raw_connection(server) as slow:
        await loop.sock_sendall(slow, b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")

        async def trickle() -> None:
            for n in range(100):  # a header line every 0.1 s: never a whole request
                await asyncio.sleep(0.1)
                await loop.sock_sendall(slow, f"X-Slow-{n}: 1\r\n".encode())

        sending = asyncio.create_task(trickle())
        try:
            assert 0.8 < await closed_after(slow, 5) < 3
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)

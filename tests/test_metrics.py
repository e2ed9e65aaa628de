"""GET /metrics against real servers: the counters move by exactly what a scripted
session did, on one node and on two nodes sharing a Redis (each node counts what it
delivered); and the meter's parts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import websockets
from conftest import ServerFactory, WsClient
from oneway_client import OneWay
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus

from roomcast.auth import mint
from roomcast.exceptions import CloseCode
from roomcast.metrics import ERROR_CODES, Histogram
from roomcast.testing import RawWebSocket, RedisProcess, ServerProcess

Connect = Callable[..., Any]
API_KEY = "test-key"
SECRET = "metrics-test-secret-0123456789abcdef"
ARGS = ("--api-key", API_KEY, "--publish-rate", "0", "--readonly-rooms", "news:*",
        "--max-buffer", "262144", "--secret", SECRET)  # fmt: skip


@dataclass
class Scrape:
    """The samples of one scrape of /metrics, by name and labels."""

    samples: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def get(self, name: str, **labels: str) -> float:
        return self.samples[(name, frozenset(labels.items()))]


@dataclass
class Delta:
    """What moved between two scrapes of one node."""

    before: Scrape
    after: Scrape

    def __call__(self, name: str, **labels: str) -> float:
        return self.after.get(name, **labels) - self.before.get(name, **labels)


async def scrape(http: aiohttp.ClientSession, server: ServerProcess) -> Scrape:
    async with http.get(server.http_url + "/metrics") as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain; version=")
        text = await reply.text()
    return Scrape({
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    })  # fmt: skip


async def raw_messages(client: WsClient, room: str, count: int) -> list[bytes]:
    """The next ``count`` messages of ``room`` the client gets, as the server sent them
    (the client made no request since it joined: ``request`` passed none over)."""
    assert not any(frame["type"] == "message" for frame in client.skipped)
    found: list[bytes] = []
    while len(found) < count:
        raw = await asyncio.wait_for(client.ws.recv(), 10)
        text = raw if isinstance(raw, str) else raw.decode()
        frame = json.loads(text)
        if frame["type"] == "message" and frame["room"] == room:
            found.append(text.encode())
    return found


async def message_count(client: WsClient, room: str, count: int) -> int:
    """Read until ``count`` messages of ``room`` came (counting those ``request`` passed
    over); how many came."""
    seen = [f for f in client.skipped if f["type"] == "message" and f["room"] == room]
    client.skipped.clear()
    while len(seen) < count:
        frame = await client.until("message", 10)
        if frame["room"] == room:
            seen.append(frame)
    return len(seen)


async def api_publish(http: aiohttp.ClientSession, node: ServerProcess, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    body = {"room": "r", "data": {"from": "api"}}
    async with http.post(node.http_url + "/api/publish", json=body, headers=headers) as reply:
        return reply.status


async def scripted(
    ws_connect: Connect, http: aiohttp.ClientSession, pub: ServerProcess, sub: ServerProcess
) -> int:
    """Two WebSocket clients (``a`` on ``pub``, ``b`` on ``sub``) and an SSE stream (on
    ``sub``) join room r; ``a`` also joins news:1 (readonly). ``a`` publishes 10, the API
    of each node 1 (2 on one node); everyone reads the 12. Then four errors: not_joined
    over WebSocket and over POST /send (on ``sub``), forbidden, a wrong API key (on
    ``pub``). Returns the JSON bytes of the 12 messages."""
    a: WsClient = await ws_connect(pub.ws_url)
    b: WsClient = await ws_connect(sub.ws_url)
    one_way = OneWay(http, sub.http_url)
    sse = await one_way.sse(rooms="r")
    token = (await sse.until("welcome")).data["token"]
    assert (await sse.until("ok")).data["room"] == "r"
    for client in (a, b):
        assert (await client.request(type="join", room="r", id="j"))["type"] == "ok"
    assert (await a.request(type="join", room="news:1", id="n"))["type"] == "ok"
    for n in range(10):
        assert (await a.request(type="publish", room="r", data={"n": n}, id=n))["type"] == "ok"
    assert await api_publish(http, pub, API_KEY) == 200
    assert await api_publish(http, sub, API_KEY) == 200
    size = sum(map(len, await raw_messages(b, "r", 12)))
    assert await message_count(a, "r", 12) == 12
    offsets = [(await sse.until("message")).data["offset"] for _ in range(12)]
    assert offsets == list(range(1, 13))
    assert (await a.request(type="publish", room="nowhere", data=1, id="x"))["code"] == (
        "not_joined"
    )
    assert (await a.request(type="publish", room="news:1", data=1, id="y"))["code"] == "forbidden"
    status, body = await one_way.send(token, {"type": "publish", "room": "nowhere", "data": 1})
    assert (status, body["code"]) == (400, "not_joined")
    assert await api_publish(http, pub, "wrong-key") == 401
    one_way.close()
    return size


@dataclass
class Flood:
    published: int  # messages the publisher got an ok for
    slow_session: str


async def flood_until_slow(
    ws_connect: Connect, pub: ServerProcess, sub: ServerProcess, data: str = "x" * 8000
) -> Flood:
    """A raw client on ``sub`` joins room flood and stops reading; a client on ``pub``
    publishes ``data`` in waves of 100 messages (reading them and their oks) until the
    server cuts the slow one off (its ``left`` arrives)."""
    slow = await RawWebSocket.connect("127.0.0.1", sub.port, rcvbuf=4096)
    welcome = json.loads((await slow.recv_frame())[1])
    slow.send_text(json.dumps({"type": "join", "room": "flood", "id": 1}))
    assert json.loads((await slow.recv_frame())[1])["type"] == "ok"
    fast: WsClient = await ws_connect(pub.ws_url, max_queue=None)
    await fast.request(type="join", room="flood", id="j")
    published = received = 0
    left = None
    while left is None:
        assert published < 5000, "the slow client was never cut off"
        for n in range(published, published + 100):
            await fast.send(type="publish", room="flood", data=data, id=n)
        published += 100
        oks = 0
        while received < published or oks < 100:
            frame = await fast.recv(10)
            if frame["type"] == "message":
                received += 1
            elif frame["type"] == "ok":
                oks += 1
            elif frame["type"] == "left":
                left = frame["member"]["session"]
    assert left == welcome["session"]
    await slow.close()
    return Flood(published, left)


def assert_session(delta: Delta, *, joins: int, sse: int, client: int, api: int,
                   members: int, size: int, errors: dict[str, int]) -> None:  # fmt: skip
    """The deltas of the scripted session on one node."""
    assert delta("roomcast_joins_total", transport="websocket") == joins
    assert delta("roomcast_joins_total", transport="sse") == sse
    assert delta("roomcast_joins_total", transport="poll") == 0
    assert delta("roomcast_leaves_total", transport="websocket") == 0
    assert delta("roomcast_messages_published_total", origin="client") == client
    assert delta("roomcast_messages_published_total", origin="api") == api
    assert delta("roomcast_messages_failed_total", origin="client") == 0
    assert delta("roomcast_history_append_seconds_count") == client + api
    assert delta("roomcast_messages_fanned_out_total") == 12
    assert delta("roomcast_messages_delivered_total") == 12 * members
    assert delta("roomcast_delivered_bytes_total") == size * members
    for code in ERROR_CODES:
        assert delta("roomcast_errors_total", code=code) == errors.get(code, 0), code
    for reason in ("slow_consumer", "heartbeat_timeout", "token_expired", "shutdown"):
        assert delta("roomcast_disconnects_total", reason=reason) == 0


async def test_one_node_counts_a_scripted_session(
    server_factory: ServerFactory, ws_connect: Connect
) -> None:
    node = server_factory("--history", "memory", *ARGS)
    async with aiohttp.ClientSession() as http:
        start = await scrape(http, node)
        assert start.get("roomcast_connections", transport="websocket") == 0
        size = await scripted(ws_connect, http, node, node)
        after = await scrape(http, node)
        errors = {"not_joined": 2, "forbidden": 1, "unauthorized": 1}
        assert_session(Delta(start, after), joins=3, sse=1, client=10, api=2, members=3,
                       size=size, errors=errors)  # fmt: skip
        assert after.get("roomcast_connections", transport="websocket") == 2
        assert after.get("roomcast_connections", transport="sse") == 1
        assert after.get("roomcast_rooms") == 2
        flood = await flood_until_slow(ws_connect, node, node)
        delta = Delta(after, await scrape(http, node))
    n = flood.published
    assert delta("roomcast_disconnects_total", reason="slow_consumer") == 1
    assert delta("roomcast_disconnects_total", reason="heartbeat_timeout") == 0
    assert delta("roomcast_messages_published_total", origin="client") == n
    # the publisher got all n, the slow one some of them before it was cut off
    assert n + 1 <= delta("roomcast_messages_delivered_total") <= 2 * n
    assert delta("roomcast_joins_total", transport="websocket") == 2
    assert delta("roomcast_leaves_total", transport="websocket") == 1


async def test_two_nodes_each_count_what_they_delivered(
    server_factory: ServerFactory, ws_connect: Connect, redis_server: RedisProcess
) -> None:
    pub = server_factory("--broker", redis_server.url, *ARGS)
    sub = server_factory("--broker", redis_server.url, *ARGS)
    async with aiohttp.ClientSession() as http:
        starts = [await scrape(http, node) for node in (pub, sub)]
        size = await scripted(ws_connect, http, pub, sub)
        afters = [await scrape(http, node) for node in (pub, sub)]
        on_pub, on_sub = (Delta(s, a) for s, a in zip(starts, afters, strict=True))
        assert_session(on_pub, joins=2, sse=0, client=10, api=1, members=1, size=size,
                       errors={"not_joined": 1, "forbidden": 1, "unauthorized": 1})  # fmt: skip
        assert_session(on_sub, joins=1, sse=1, client=0, api=1, members=2, size=size,
                       errors={"not_joined": 1})  # fmt: skip
        assert afters[0].get("roomcast_broker_up") == afters[1].get("roomcast_broker_up") == 1
        flood = await flood_until_slow(ws_connect, pub, sub)
        nodes = zip(afters, (pub, sub), strict=True)
        on_pub, on_sub = [Delta(after, await scrape(http, node)) for after, node in nodes]
    n = flood.published
    assert on_pub("roomcast_messages_published_total", origin="client") == n
    assert on_pub("roomcast_messages_delivered_total") == n  # the publisher, on its node
    assert on_pub("roomcast_disconnects_total", reason="slow_consumer") == 0
    assert on_sub("roomcast_messages_published_total", origin="client") == 0
    assert 1 <= on_sub("roomcast_messages_delivered_total") <= n  # the slow one, cut off
    assert on_sub("roomcast_disconnects_total", reason="slow_consumer") == 1
    assert on_sub("roomcast_leaves_total", transport="websocket") == 1


async def test_heartbeat_and_token_expiry_disconnects_and_refused_tokens(
    server_factory: ServerFactory,
) -> None:
    node = server_factory("--history", "memory", "--heartbeat", "0.5", "--auth", "required",
                          "--token-secret", SECRET, "--token-grace", "0")  # fmt: skip
    lasting = mint("quiet", key=SECRET.encode(), join=("r",), ttl=3600)
    async with aiohttp.ClientSession() as http:
        start = await scrape(http, node)
        quiet = await RawWebSocket.connect("127.0.0.1", node.port, f"/ws?token={lasting}")
        while (frame := await asyncio.wait_for(quiet.recv_frame(), 10))[0] != 0x8:
            pass  # the welcome and pings it never answers
        assert int.from_bytes(frame[1][:2], "big") == CloseCode.HEARTBEAT_TIMEOUT
        await quiet.close()
        brief = mint("brief", key=SECRET.encode(), join=("r",), ttl=1)
        async with websockets.connect(f"{node.ws_url}?token={brief}") as ws:
            await asyncio.wait_for(ws.wait_closed(), 10)
            assert ws.close_code == CloseCode.TOKEN_EXPIRED
        with pytest.raises(InvalidStatus):
            await websockets.connect(f"{node.ws_url}?token=not-a-token")
        delta = Delta(start, await scrape(http, node))
    assert delta("roomcast_disconnects_total", reason="heartbeat_timeout") == 1
    assert delta("roomcast_disconnects_total", reason="token_expired") == 1
    assert delta("roomcast_disconnects_total", reason="slow_consumer") == 0
    assert delta("roomcast_errors_total", code="token_expired") == 1  # its error frame
    assert delta("roomcast_errors_total", code="unauthorized") == 1  # the refused connection
    assert delta("roomcast_joins_total", transport="websocket") == 0


async def test_metrics_of_the_node_itself(server_factory: ServerFactory) -> None:
    node = server_factory("--history", "memory", "--node-id", "n-7")
    async with aiohttp.ClientSession() as http:
        metrics = await scrape(http, node)
    assert metrics.get("roomcast_info", node="n-7") == 1
    assert metrics.get("roomcast_broker_up") == 1
    assert metrics.get("roomcast_broker_reconnects_total") == 0
    assert metrics.get("process_resident_memory_bytes") > 0
    for name in ("history_append", "broker_roundtrip", "event_loop_lag"):
        count = metrics.get(f"roomcast_{name}_seconds_count")
        assert metrics.get(f"roomcast_{name}_seconds_bucket", le="+Inf") == count


def test_histogram_buckets_are_cumulative_and_include_their_bound() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.1, 0.5, 1.0, 7.0):
        histogram.observe(value)
    assert histogram.buckets() == [("0.1", 2.0), ("1.0", 4.0), ("+Inf", 5.0)]
    assert histogram.count == 5
    assert histogram.total == pytest.approx(8.65)

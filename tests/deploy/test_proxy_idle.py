"""Idle connections through each proxy: the proxies are rendered with a 3 s idle timeout
and the nodes run --heartbeat 1, so a WebSocket and an SSE stream that carry nothing
else for longer than 3 s stay open, kept alive by the pings and comments (in
production: heartbeat 25 s, proxy timeout 60 s). A long poll that waits longer than the
proxy timeout, by contrast, is cut: the proof that the 3 s are in force."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from roomcast.testing import ServerProcess

from .helpers import (
    IDLE_TIMEOUT,
    POLL_TIMEOUT,
    PRESENCE,
    Proxied,
    api_publish,
    new_room,
    open_sse,
    poll,
    started,
    without_ts,
)

PINGS = 5  # at --heartbeat 1: at least 4 s from the first to the last, above IDLE_TIMEOUT


async def ws_frames(
    ws: aiohttp.ClientWebSocketResponse, *, pings: int = 0, until: str = "", timeout: float = 20
) -> tuple[int, list[dict[str, Any]]]:
    """Read (answering every ping with a pong, as browsers do) until ``pings`` pings came
    or a frame of type ``until``; (pings seen, frames read)."""
    seen = 0
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while (pings and seen < pings) or (until and not any(f["type"] == until for f in frames)):
            message = await ws.receive()
            if message.type is WSMsgType.PING:
                seen += 1
                await ws.pong(message.data)
            elif message.type is WSMsgType.TEXT:
                frames.append(json.loads(message.data))
            else:
                raise AssertionError(f"the WebSocket ended: {message}")
    return seen, frames


async def poll_past_the_proxy_timeout(
    http: aiohttp.ClientSession, proxy: Proxied
) -> tuple[str, float]:
    """A long poll that waits up to POLL_TIMEOUT on a quiet room: (how it ended, after
    how many seconds)."""
    loop = asyncio.get_running_loop()
    first = await poll(http, proxy.url, rooms=new_room())
    params = {"session": first["session"], "cursor": first["cursor"],
              "timeout": f"{POLL_TIMEOUT:g}"}  # fmt: skip
    start = loop.time()
    try:
        async with http.get(proxy.url + "/poll", params=params) as response:
            await response.read()
            outcome = f"status {response.status}"
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError, aiohttp.ClientOSError):
        outcome = "disconnected"
    return outcome, loop.time() - start


async def test_idle_streams_outlive_the_proxy_timeout_thanks_to_heartbeats(
    own_proxy: Proxied, cluster: list[ServerProcess], http: aiohttp.ClientSession
) -> None:
    loop = asyncio.get_running_loop()
    room = new_room()
    async with http.ws_connect(own_proxy.ws_url, autoping=False) as ws:
        _, frames = await ws_frames(ws, until="welcome")
        assert frames[0]["heartbeat"] == 1
        await ws.send_json({"type": "join", "room": room, "id": 1})
        _, frames = await ws_frames(ws, until="ok")
        epoch = frames[-1]["epoch"]
        assert frames[-1] == {"type": "ok", "id": 1, "room": room, "epoch": epoch, "offset": 0}
        stream = await open_sse(http, own_proxy.url, rooms=room)
        await started(stream, room)

        start = loop.time()
        control = asyncio.create_task(poll_past_the_proxy_timeout(http, own_proxy))
        (pings, frames), events = await asyncio.gather(
            ws_frames(ws, pings=PINGS), stream.count_pings(PINGS)
        )
        assert pings == PINGS
        assert loop.time() - start > IDLE_TIMEOUT  # nothing but heartbeats for that long
        assert {f["type"] for f in frames} <= PRESENCE  # the stream's session joining
        assert {e.event for e in events} <= PRESENCE

        # Both are still open: a message reaches both at once. It is published on a node
        # directly, so that nothing else goes through the proxy while the control poll
        # is under way.
        assert await api_publish(http, cluster[0].http_url, room, "still here") == 1
        expected = {"type": "message", "room": room, "epoch": epoch, "offset": 1,
                    "data": "still here", "from": None}  # fmt: skip
        _, frames = await ws_frames(ws, until="message")
        assert [without_ts(f) for f in frames if f["type"] not in PRESENCE] == [expected]
        event = await stream.next()
        assert (event.event, event.id) == ("message", f"{room}~{epoch}~1")
        assert without_ts(event.data) == expected
        stream.close()

    # The control: a poll left waiting longer than the proxy's idle timeout is cut before
    # the node would answer it. nginx tries the next node once (proxy_next_upstream
    # timeout), then answers 504; HAProxy answers 504 in HTTP mode, and in TCP mode
    # closes the connection (aiohttp then sends the GET once more, as it does when a
    # kept-alive connection drops, and that one is cut too).
    async with asyncio.timeout(POLL_TIMEOUT + 10):
        outcome, waited = await control
    assert outcome == ("disconnected" if own_proxy.kind == "haproxy-tcp" else "status 504")
    assert IDLE_TIMEOUT - 0.2 < waited < POLL_TIMEOUT

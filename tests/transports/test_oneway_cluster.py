"""SSE and long polling on a two-node Redis cluster, each request to the other node:
no sticky sessions, no loss, no duplicates, presence without flapping."""

from __future__ import annotations

import shutil
from typing import Any

import aiohttp
import pytest
from conftest import ServerFactory, WsClient
from oneway_client import OneWay

from roomcast.testing import RedisProcess, ServerProcess

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis")
SECRET = "one secret for the whole cluster"


@pytest.fixture
def nodes(redis_server: RedisProcess, server_factory: ServerFactory) -> list[ServerProcess]:
    args = ["--broker", redis_server.url, "--secret", SECRET, "--api-key", "test-key"]
    args += ["--publish-rate", "0", "--poll-timeout", "2", "--presence-ttl", "1.5"]
    return [server_factory(*args, "--node-id", name) for name in ("n1", "n2")]


async def test_polls_and_sends_bouncing_between_nodes_lose_nothing(
    nodes: list[ServerProcess], ws_connect: Any
) -> None:
    watcher: WsClient = await ws_connect(nodes[0].ws_url)
    await watcher.request(type="join", room="r", id=0)
    async with aiohttp.ClientSession() as http:
        one, two = (OneWay(http, node.http_url) for node in nodes)
        status, answer = await one.poll(rooms="r", name="bouncer")
        assert status == 200
        member = {"session": answer["events"][0]["session"], "user": "bouncer"}
        assert await watcher.until("joined") == {"type": "joined", "room": "r", "member": member}
        watcher.skipped.clear()
        token, cursor = answer["session"], answer["cursor"]
        seen: list[int] = []
        served_by: set[str] = set()
        for n in range(1, 13):
            sender = (one, two)[n % 2]  # the token is good on either node
            status, ok = await sender.send(token, {"type": "publish", "room": "r", "data": n})
            assert (status, ok["offset"]) == (200, n)
            if n % 3 == 0:  # a poll now and then, each to the other node
                status, got = await (one, two)[n // 3 % 2].poll(session=token, cursor=cursor)
                assert status == 200
                seen += [event["offset"] for event in got["events"] if event["type"] == "message"]
                token, cursor = got["session"], got["cursor"]
                served_by.add(got["node"])
        assert seen == list(range(1, 13))
        assert served_by == {"n1", "n2"}
        reply = await watcher.request(type="presence", room="r", id=1)
        assert [m["user"] for m in reply["members"] if m["user"] == "bouncer"] == ["bouncer"]
        events = [f for f in watcher.skipped if f["type"] in {"joined", "left"}]
        assert events == []  # polling on both nodes: still one member, no flapping


async def test_an_sse_stream_resumes_on_the_other_node(nodes: list[ServerProcess]) -> None:
    async with aiohttp.ClientSession() as http:
        one, two = (OneWay(http, node.http_url) for node in nodes)
        stream = await one.sse(rooms="s")
        assert (await stream.next()).data["node"] == "n1"
        await stream.until("ok")
        for n in range(1, 4):
            assert await two.publish("s", n) == n
        got = [await stream.until("message") for _ in range(3)]
        assert [e.data["offset"] for e in got] == [1, 2, 3]
        stream.close()
        for n in range(4, 7):
            await one.publish("s", n)
        again = await two.sse(rooms="s", last_event_id=got[1].id or "")
        assert (await again.next()).data["node"] == "n2"
        replayed = [await again.next() for _ in range(5)]
        assert [(e.event, e.data["offset"]) for e in replayed] == [
            ("message", 3), ("message", 4), ("message", 5), ("message", 6), ("ok", 6)
        ]  # fmt: skip
        one.close()
        two.close()

"""The demos' routes (/demo/): the pages, and POST /demo/jobs with the progress its job
publishes, its limit and its refusals of bad input."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from conftest import ServerFactory, WsClient

from roomcast.config import Settings
from roomcast.exceptions import ProtocolError
from roomcast.http.demo import MAX_JOBS, Jobs, JobSpec
from roomcast.node import Node
from roomcast.testing import ServerProcess

Connect = Callable[..., Any]
JOB_ID = re.compile(r"[0-9a-f]{12}")
STEP_LOG = re.compile(r"step (\d+)/(\d+): \w+ \d+ \w+")
LONG = {"steps": 100, "delay": 2}  # a job that outlives the test


async def post_job(
    server: ServerProcess, body: Any = None, *, raw: bytes | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    async with (
        aiohttp.ClientSession() as http,
        http.post(server.http_url + "/demo/jobs", data=data) as answer,
    ):
        return answer.status, await answer.json(), dict(answer.headers)


def progress(step: int, steps: int) -> dict[str, Any]:
    """What a job's message says at ``step`` (its log line is checked apart)."""
    return {"step": step, "of": steps, "percent": step * 100 // steps, "done": step == steps}


async def test_a_job_publishes_every_step_into_its_room(
    server: ServerProcess, ws_connect: Connect
) -> None:
    status, answer, _ = await post_job(server, {"steps": 5, "delay": 0.05})
    assert status == 202
    assert set(answer) == {"job", "room"}
    assert JOB_ID.fullmatch(answer["job"])
    assert answer["room"] == f"job:{answer['job']}"

    member: WsClient = await ws_connect(server.ws_url)
    joined = await member.request(type="join", room=answer["room"], id="j")
    assert joined["type"] == "ok"
    live: list[dict[str, Any]] = []
    while not live or not live[-1]["data"]["done"]:  # the rest of the job, as it runs
        live.append(await member.until("message"))
    stored = (await member.request(type="history", room=answer["room"], id="h"))["messages"]

    assert [m["offset"] for m in stored] == [1, 2, 3, 4, 5, 6]
    assert stored[joined["offset"] :] == live  # live after the join, each once, in order
    assert all(m["from"] is None for m in stored)
    data = [m["data"] for m in stored]
    assert [{k: d[k] for k in ("step", "of", "percent", "done")} for d in data] == [
        progress(n, 5) for n in range(6)
    ]
    assert data[0]["log"] == "job started: 5 steps"
    for n, entry in enumerate(data[1:], start=1):
        match = STEP_LOG.fullmatch(entry["log"])
        assert match is not None, entry["log"]
        assert (int(match[1]), int(match[2])) == (n, 5)


async def test_jobs_over_the_limit_are_refused_with_429(server: ServerProcess) -> None:
    rooms = set()
    for _ in range(MAX_JOBS):
        status, answer, _ = await post_job(server, LONG)
        assert status == 202
        rooms.add(answer["room"])
    assert len(rooms) == MAX_JOBS  # every job has a room of its own
    status, answer, headers = await post_job(server, {"steps": 1})
    assert status == 429
    assert answer == {
        "type": "error",
        "code": "rate_limited",
        "message": f"{MAX_JOBS} demo jobs are running: try again when one has finished",
    }
    assert headers["Retry-After"] == "2"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"{", "bad body: Input data was truncated"),
        (b"[]", "bad body: Expected `object`, got `array`"),
        (b'{"steps": 0}', "bad body: Expected `int` >= 1 - at `$.steps`"),
        (b'{"steps": 101}', "bad body: Expected `int` <= 100 - at `$.steps`"),
        (b'{"steps": "5"}', "bad body: Expected `int`, got `str` - at `$.steps`"),
        (b'{"steps": true}', "bad body: Expected `int`, got `bool` - at `$.steps`"),
        (b'{"delay": -1}', "bad body: Expected `float` >= 0.0 - at `$.delay`"),
        (b'{"delay": 2.5}', "bad body: Expected `float` <= 2.0 - at `$.delay`"),
        (b'{"every": 1}', "bad body: Object contains unknown field `every`"),
        (b'{"steps": 5}\xff', "bad body: JSON is malformed: trailing characters (byte 13)"),
    ],
)
async def test_bad_bodies_are_400(server: ServerProcess, raw: bytes, message: str) -> None:
    status, answer, _ = await post_job(server, raw=raw)
    assert (status, answer) == (400, {"type": "error", "code": "bad_request", "message": message})


async def test_a_body_over_the_size_limit_is_413(server_factory: ServerFactory) -> None:
    server = server_factory("--history", "memory", "--max-message-size", "1024")
    status, answer, _ = await post_job(server, raw=b'{"steps": 5, "pad": "' + b"x" * 2000 + b'"}')
    assert (status, answer) == (
        413, {"type": "error", "code": "too_large", "message": "the body is too large"}
    )  # fmt: skip


async def test_an_empty_body_starts_the_default_job(
    server: ServerProcess, ws_connect: Connect
) -> None:
    status, answer, _ = await post_job(server)
    assert status == 202
    member: WsClient = await ws_connect(server.ws_url)
    await member.request(type="join", room=answer["room"], id="j")
    first = await member.request(type="history", room=answer["room"], id="h", limit=1)
    if not first["messages"]:  # step 0 not published yet: it comes live
        first["messages"] = [await member.until("message")]
    assert first["messages"][0]["data"]["log"] == "job started: 20 steps"


async def test_the_pages_are_served(server: ServerProcess) -> None:
    async with aiohttp.ClientSession() as http:
        for path, title in [
            ("/demo/", "roomcast demos"),
            ("/demo/ticker", "Ticker"),
            ("/demo/jobs", "Progress"),
            ("/demo/cursors", "Cursors"),
        ]:
            async with http.get(server.http_url + path) as page:
                assert (page.status, page.content_type) == (200, "text/html")
                assert f"<title>{title}" in await page.text()
        async with http.get(server.http_url + "/demo", allow_redirects=False) as moved:
            assert (moved.status, moved.headers["Location"]) == (308, "/demo/")
        for name in ("ticker.js", "jobs.js", "cursors.js", "common.js", "demo.css"):
            async with http.get(f"{server.http_url}/static/demo/{name}") as asset:
                assert asset.status == 200, name


async def test_a_server_with_running_jobs_stops_cleanly(server_factory: ServerFactory) -> None:
    server = server_factory("--history", "memory")
    for _ in range(3):
        assert (await post_job(server, LONG))[0] == 202
    assert await asyncio.to_thread(server.stop) == 0
    assert "Traceback" not in server.log()
    assert "Task was destroyed" not in server.log()


async def test_a_finished_job_frees_its_place(node: Node) -> None:
    jobs = Jobs(limit=2)
    short = jobs.start(node, JobSpec(steps=1, delay=0))
    jobs.start(node, JobSpec(**LONG))
    with pytest.raises(ProtocolError, match="2 demo jobs are running"):
        jobs.start(node, JobSpec(steps=1))
    await asyncio.wait_for(jobs.running[short], 5)
    assert len(jobs.running) == 1
    jobs.start(node, JobSpec(steps=1))
    assert len(jobs.running) == 2
    await jobs.stop()
    assert jobs.running == {}


async def test_a_job_ends_quietly_when_the_node_stops(caplog: pytest.LogCaptureFixture) -> None:
    node = Node(Settings(history="memory"))
    await node.start()
    jobs = Jobs()
    job = jobs.start(node, JobSpec(steps=50, delay=0.01))
    task = jobs.running[job]
    await node.drain()
    await asyncio.wait_for(task, 5)  # ends without raising
    assert f"demo job job:{job} stopped: the server is shutting down" in caplog.text
    assert jobs.running == {}

"""Node's `ws` library as an independent client, side by side with `websockets`."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import WsClient

from roomcast.testing import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
NODE_CLIENT = Path(__file__).with_name("node_client.js")

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (ROOT / "node_modules" / "ws").is_dir(),
    reason="needs node and `npm install` (ws)",
)


async def test_node_ws_client_and_websockets_client_share_a_room(
    server: ServerProcess, ws_connect: Callable[..., Any]
) -> None:
    watcher: WsClient = await ws_connect(server.ws_url + "?name=py")
    await watcher.request(type="join", room="mixed", id=1)
    process = await asyncio.create_subprocess_exec(
        "node", str(NODE_CLIENT), server.ws_url + "?name=node", "mixed", "3",
        stdout=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    stdout, _ = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0
    lines = [json.loads(line) for line in stdout.decode().splitlines()]
    assert all(line["binary"] is False for line in lines)
    frames = [line["frame"] for line in lines]
    assert frames[0]["type"] == "welcome"
    node_session = frames[0]["session"]
    messages = [f for f in frames if f["type"] == "message"]
    acks = [f for f in frames if f["type"] == "ok" and f["id"] != "join"]
    assert [(m["offset"], m["data"]) for m in messages] == [
        (n, {"n": n, "from": "node"}) for n in (1, 2, 3)
    ]
    assert sorted((a["id"], a["offset"]) for a in acks) == [(1, 1), (2, 2), (3, 3)]
    assert await watcher.recv() == {
        "type": "joined", "room": "mixed", "member": {"session": node_session, "user": "node"}
    }  # fmt: skip
    seen = [await watcher.recv() for _ in range(3)]
    assert seen == messages
    assert (await watcher.recv())["type"] == "left"

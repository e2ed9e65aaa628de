"""`roomcast serve` options, from flags and from ROOMCAST_* variables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import aiohttp
import websockets

from roomcast.testing import ServerProcess, free_port


def roomcast(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "roomcast", *args],
        capture_output=True, text=True, timeout=30, check=False, env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_help_lists_every_option_with_its_variable() -> None:
    result = roomcast("serve", "--help")
    assert result.returncode == 0
    for option in ["--port", "--history-size", "--api-key", "--heartbeat", "--max-buffer"]:
        assert option in result.stdout
    assert "ROOMCAST_HISTORY_TTL" in result.stdout


def test_bad_settings_are_refused_before_starting() -> None:
    result = roomcast("serve", "--history-size", "0")
    assert result.returncode == 2
    assert "--history-size must be positive" in result.stderr


async def test_environment_variables_configure_the_server(tmp_path: Path) -> None:
    port = free_port()
    env = {"ROOMCAST_PORT": str(port), "ROOMCAST_HEARTBEAT": "7", "ROOMCAST_HISTORY": "memory",
           "ROOMCAST_NODE_ID": "node-from-env"}  # fmt: skip
    server = ServerProcess(port=port, data_dir=tmp_path, env=env)
    server.args = []  # the port also comes from --port; everything else from the environment
    with server:
        async with websockets.connect(server.ws_url) as ws:
            welcome = json.loads(await ws.recv())
        assert (welcome["heartbeat"], welcome["node"]) == (7, "node-from-env")
        async with aiohttp.ClientSession() as http, http.get(server.http_url + "/ready") as answer:
            assert (await answer.json())["node"] == "node-from-env"

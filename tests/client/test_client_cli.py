"""``roomcast connect`` and ``roomcast publish`` as subprocesses against a real server."""

from __future__ import annotations

import asyncio
import json
import os
import sys

from roomcast.testing import ServerProcess

from .conftest import ClientFactory, CliFactory
from .helpers import Events, ServerFactory, http_publish


async def run_publish(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "roomcast", "publish", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_connect_chats(
    server: ServerProcess, cli: CliFactory, client_factory: ClientFactory
) -> None:
    alice = await cli("connect", server.ws_url, "--room", "lobby", "--name", "alice")
    assert await alice.line() == "[lobby] * joined at offset 0"
    bob = await client_factory(server.ws_url, name="bob")
    await bob.join("lobby")
    assert await alice.line() == "[lobby] * bob joined"

    await alice.type("hello")
    assert await alice.line() == "[lobby] alice: hello"
    message = await Events(bob).next("message")
    assert (message["offset"], message["data"]) == (1, {"text": "hello"})
    assert message["from"]["user"] == "alice"

    await bob.publish("lobby", {"text": "hi alice"})
    assert await alice.line() == "[lobby] bob: hi alice"
    http_publish(server, "lobby", {"x": 1})
    assert await alice.line() == '[lobby] (api): {"x":1}'

    await alice.type("/who")
    assert await alice.line() in {"[lobby] members: alice, bob", "[lobby] members: bob, alice"}
    await alice.type("/history 2")
    assert [await alice.line(), await alice.line()] == [
        "[lobby] bob: hi alice",
        '[lobby] (api): {"x":1}',
    ]
    await bob.close()
    assert await alice.line() == "[lobby] * bob left"
    assert await alice.end_input() == 0  # EOF exits cleanly


async def test_connect_rooms_and_errors(server: ServerProcess, cli: CliFactory) -> None:
    alice = await cli("connect", server.ws_url, "-r", "lobby", "-n", "alice")
    assert await alice.line() == "[lobby] * joined at offset 0"
    await alice.type("/join side", "in side")
    assert await alice.line() == "[side] * joined at offset 0"
    assert await alice.line() == "[side] alice: in side"
    await alice.type("/leave side", "back in lobby")
    assert await alice.line() == "[side] * left"
    assert await alice.line() == "[lobby] alice: back in lobby"
    await alice.type("/leave side")
    assert await alice.line() == "! not_joined: not in room 'side'"
    await alice.type("/join bad!room")
    assert await alice.line() == "! invalid_room: room names are 1-128 characters of A-Za-z0-9_.:@-"
    await alice.type("/history")
    assert await alice.line() == "[lobby] alice: back in lobby"
    await alice.type("/quit", "never sent")
    assert await asyncio.wait_for(alice.process.wait(), 10) == 0
    assert "unknown" not in await alice.stderr()


async def test_connect_json_prints_raw_frames(server: ServerProcess, cli: CliFactory) -> None:
    alice = await cli("connect", server.ws_url, "--room", "lobby", "--name", "alice", "--json")
    welcome = await alice.json()
    assert welcome["type"] == "welcome" and set(welcome) == {
        "type", "session", "node", "heartbeat",
    }  # fmt: skip
    joined = await alice.json()
    assert joined == {"type": "ok", "id": 1, "room": "lobby", "epoch": joined["epoch"], "offset": 0}
    await alice.type("hello")
    frames = [await alice.json(), await alice.json()]  # the message and the publish's ok
    frames.sort(key=lambda frame: str(frame["type"]))
    epoch = joined["epoch"]
    assert frames[0] == {
        "type": "message", "room": "lobby", "epoch": epoch, "offset": 1,
        "data": {"text": "hello"}, "from": {"session": welcome["session"], "user": "alice"},
        "ts": frames[0]["ts"],
    }  # fmt: skip
    assert frames[1] == {"type": "ok", "id": 2, "room": "lobby", "epoch": epoch, "offset": 1}
    await alice.type("/who")
    assert await alice.json() == {
        "type": "ok", "id": 3, "room": "lobby",
        "members": [{"session": welcome["session"], "user": "alice"}],
    }  # fmt: skip
    await alice.type("/leave nowhere")
    assert await alice.json() == {
        "type": "error", "id": 4, "code": "not_joined", "message": "not in room 'nowhere'",
    }  # fmt: skip
    assert await alice.end_input() == 0


async def test_connect_reconnects_and_recovers(
    server_factory: ServerFactory, cli: CliFactory
) -> None:
    server = server_factory("--api-key", "test-key")
    alice = await cli("connect", server.ws_url, "--room", "lobby", "--name", "alice")
    assert await alice.line() == "[lobby] * joined at offset 0"
    await alice.type("before")
    assert await alice.line() == "[lobby] alice: before"
    server.restart()  # SQLite history: what is published now is recovered
    http_publish(server, "lobby", {"text": "while you were away"})
    assert await alice.line() == "[lobby] (api): while you were away"
    await alice.type("after")
    assert await alice.line() == "[lobby] alice: after"
    assert await alice.end_input() == 0
    err = await alice.stderr()
    assert "* disconnected (code 1012), reconnecting" in err and "* reconnected" in err


async def test_connect_fails_cleanly(cli: CliFactory, server: ServerProcess) -> None:
    refused = await cli("connect", "ws://127.0.0.1:1/ws", "--room", "lobby")
    assert await asyncio.wait_for(refused.process.wait(), 20) == 1
    assert "roomcast: cannot connect to ws://127.0.0.1:1/ws" in await refused.stderr()
    bad_room = await cli("connect", server.ws_url, "--room", "no spaces")
    assert await asyncio.wait_for(bad_room.process.wait(), 20) == 1
    assert "roomcast: invalid_room:" in await bad_room.stderr()


async def test_publish(server: ServerProcess, client_factory: ClientFactory) -> None:
    watcher = await client_factory(server.ws_url)
    epoch = (await watcher.join("lobby"))["epoch"]
    code, out, err = await run_publish(
        server.http_url, "--room", "lobby", "--data", '{"x":1}', "--api-key", "test-key"
    )
    assert (code, err) == (0, "")
    assert json.loads(out) == {"room": "lobby", "epoch": epoch, "offset": 1}
    message = await Events(watcher).next("message")
    assert (message["offset"], message["data"], message["from"]) == (1, {"x": 1}, None)
    # A ws:// URL works too, and the key may come from ROOMCAST_API_KEY.
    code, out, _ = await run_publish(
        server.ws_url, "-r", "lobby", "-d", "[true]", env={"ROOMCAST_API_KEY": "test-key"}
    )
    assert code == 0 and json.loads(out)["offset"] == 2


async def test_publish_errors(server: ServerProcess) -> None:
    code, out, err = await run_publish(
        server.http_url, "--room", "lobby", "--data", "1", "--api-key", "wrong"
    )
    assert (code, out) == (1, "")
    assert err == "roomcast: unauthorized: missing or wrong API key (HTTP 401)\n"
    code, _, err = await run_publish(server.http_url, "--room", "bad room", "--data", "1",
                                     "--api-key", "test-key")  # fmt: skip
    assert code == 1 and err.startswith("roomcast: invalid_room: ") and "(HTTP 400)" in err
    code, _, err = await run_publish(server.http_url, "--room", "r", "--data", "{nope")
    assert code == 2 and "not JSON" in err
    code, _, err = await run_publish("ftp://example.com", "--room", "r", "--data", "1")
    assert code == 2 and "not an http(s) or ws(s) URL" in err


async def test_connect_with_piped_input_prints_everything_before_exiting(
    server: ServerProcess,
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "roomcast", "connect", server.ws_url, "-r", "lobby", "-n", "cat",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(b"one\ntwo\nthree"), 30)
    assert process.returncode == 0
    assert out.decode().splitlines() == [
        "[lobby] * joined at offset 0",
        "[lobby] cat: one",
        "[lobby] cat: two",
        "[lobby] cat: three",  # the last line needs no newline
    ]


async def test_connect_with_a_token(server_factory: ServerFactory, cli: CliFactory) -> None:
    from roomcast.auth import mint

    secret = "cli-connect-secret-0123456789abcdef"
    server = server_factory("--history", "memory", "--auth", "required", "--token-secret", secret)
    token = mint("alice", key=secret.encode(), join=("lobby",), publish=("lobby",))
    alice = await cli("connect", server.ws_url, "--room", "lobby", "--token", token)
    assert await alice.line() == "[lobby] * joined at offset 0"
    await alice.type("hello")
    assert await alice.line() == "[lobby] alice: hello"
    assert await alice.end_input() == 0
    assert f"* connected to {server.ws_url} as alice;" in await alice.stderr()
    refused = await cli("connect", server.ws_url, "--room", "lobby")
    assert await asyncio.wait_for(refused.process.wait(), 20) == 1
    assert "401" in await refused.stderr()

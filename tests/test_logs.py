"""Structured logs: JSON lines with their event fields, the text format, the events
worth knowing (start, stop, broker down and up, slow consumer, heartbeat timeout, token
expiry, auth failure, config warnings), and never a password, a token or a message body."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from typing import Any

import aiohttp
import pytest
import redis
import websockets
from conftest import ServerFactory
from test_metrics import Connect, flood_until_slow, scrape
from websockets.exceptions import InvalidStatus

from roomcast.auth import mint
from roomcast.exceptions import CloseCode
from roomcast.logs import JsonFormatter, Throttle, redact_url
from roomcast.testing import RawWebSocket, RedisProcess, ServerProcess

SECRET = "logs-test-token-secret-0123456789abcdef"
BODY = "body-never-logged-7f3a9c"


def json_lines(server: ServerProcess) -> list[dict[str, Any]]:
    """Every line of the server's log, each a JSON object with the four fields."""
    lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    for line in lines:
        assert {"ts", "level", "logger", "msg"} <= line.keys(), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])
    return lines


def events(lines: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("event") == name]


async def test_json_lines_carry_each_event_and_its_fields(server_factory: ServerFactory) -> None:
    server = server_factory("--history", "memory", "--log-format", "json", "--heartbeat", "0.5",
                            "--auth", "required", "--token-secret", SECRET, "--token-grace", "0",
                            "--node-id", "n-json", "--log-level", "debug")  # fmt: skip
    forged = mint("mallory", key=b"x" * 32, join=("r",))
    with pytest.raises(InvalidStatus):
        await websockets.connect(f"{server.ws_url}?token={forged}")
    quiet = await RawWebSocket.connect(
        "127.0.0.1", server.port, f"/ws?token={mint('q', key=SECRET.encode(), join=('r',))}"
    )
    quiet_session = json.loads((await quiet.recv_frame())[1])["session"]
    while (await asyncio.wait_for(quiet.recv_frame(), 10))[0] != 0x8:
        pass  # pings it never answers, then the close
    await quiet.close()
    brief = mint("brief", key=SECRET.encode(), join=("r",), ttl=1)
    async with websockets.connect(f"{server.ws_url}?token={brief}") as ws:
        brief_session = json.loads(await ws.recv())["session"]
        await asyncio.wait_for(ws.wait_closed(), 10)
        assert ws.close_code == CloseCode.TOKEN_EXPIRED
    assert server.stop() == 0
    lines = json_lines(server)
    [start] = events(lines, "start")
    assert start["level"] == "info" and start["logger"] == "roomcast.server"
    assert {key: start[key] for key in ("host", "port", "node", "broker", "auth", "tls")} == {
        "host": "127.0.0.1", "port": server.port, "node": "n-json", "broker": "memory://",
        "auth": "required", "tls": False,
    }  # fmt: skip
    [failure] = events(lines, "auth_failure")
    assert failure["level"] == "warning"
    assert failure["client"] == "127.0.0.1" and failure["path"] == "/ws"
    assert failure["reason"].startswith("invalid token")
    assert [e["session"] for e in events(lines, "heartbeat_timeout")] == [quiet_session]
    assert [e["session"] for e in events(lines, "token_expired")] == [brief_session]
    assert [line["event"] for line in lines if line.get("event") in {"stopping", "stop"}] == [
        "stopping", "stop",
    ]  # fmt: skip
    log = server.log()
    for secret in (SECRET, forged, brief):
        assert secret not in log


async def test_text_lines_a_slow_consumer_and_no_message_body(
    server_factory: ServerFactory, ws_connect: Connect
) -> None:
    server = server_factory("--history", "memory", "--api-key", "k", "--publish-rate", "0",
                            "--max-buffer", "262144", "--log-level", "debug")  # fmt: skip
    flood = await flood_until_slow(ws_connect, server, server, data=BODY * 300)
    async with aiohttp.ClientSession() as http:
        body = {"room": "flood", "data": {"text": BODY}}
        headers = {"Authorization": "Bearer k"}
        async with http.post(server.http_url + "/api/publish", json=body, headers=headers) as r:
            assert r.status == 200
    assert server.stop() == 0
    lines = server.log().splitlines()
    pattern = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (DEBUG|INFO|WARNING|ERROR) [\w.]+: .+"
    for line in lines:
        assert re.fullmatch(pattern, line), line
    [slow] = [line for line in lines if "slow consumer" in line]
    assert f"session {flood.slow_session} disconnected: slow consumer (" in slow
    buffered = int(re.findall(r"\((\d+) bytes buffered\)", slow)[0])
    assert buffered > 262144
    assert any("WARNING roomcast.server: --auth off: anyone may join" in line for line in lines)
    assert any("roomcast serving on http://127.0.0.1:" in line and "auth off" in line
               for line in lines)  # fmt: skip
    assert BODY not in server.log()


async def test_a_broker_outage_is_logged_without_the_password(
    server_factory: ServerFactory, redis_server: RedisProcess
) -> None:
    password = "hunter2-never-logged"
    redis.Redis(port=redis_server.port).config_set("requirepass", password)
    url = f"redis://:{password}@127.0.0.1:{redis_server.port}/0"
    server = server_factory("--broker", url, "--log-format", "json")
    redis_server.restart()  # its connections drop; its password is set again at once
    redis.Redis(port=redis_server.port).config_set("requirepass", password)
    async with aiohttp.ClientSession() as http, asyncio.timeout(30):
        # the server's reconnection is seen only by asking it
        while (await scrape(http, server)).get("roomcast_broker_reconnects_total") < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    assert server.stop() == 0
    lines = json_lines(server)
    assert password not in server.log()
    [start] = events(lines, "start")
    assert start["broker"] == f"redis://:***@127.0.0.1:{redis_server.port}/0"
    downs = events(lines, "broker_down")
    assert downs and all(down["reason"] and down["level"] == "warning" for down in downs)
    assert len(events(lines, "broker_up")) == 2
    order = [line["event"] for line in lines if line.get("event", "").startswith("broker_")]
    assert order[0] == "broker_up" and order[1] == "broker_down" and order[-1] == "broker_up"


def test_the_json_formatter() -> None:
    logger = logging.getLogger("roomcast.test")
    record = logger.makeRecord(
        logger.name, logging.WARNING, __file__, 1, "session %s: %d bytes", ("s1", 7), None,
        extra={"event": "slow_consumer", "session": "s1", "buffered": 7},
    )  # fmt: skip
    line = json.loads(JsonFormatter().format(record))
    assert line.pop("ts").endswith("Z")
    assert line == {"level": "warning", "logger": "roomcast.test", "msg": "session s1: 7 bytes",
                    "event": "slow_consumer", "session": "s1", "buffered": 7}  # fmt: skip
    try:
        raise ValueError("boom")
    except ValueError:
        failed = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "failed", (),
                                   sys.exc_info(), extra={"path": object()})  # fmt: skip
    line = json.loads(JsonFormatter().format(failed))
    assert "Traceback" in line["exc"] and "ValueError: boom" in line["exc"]
    assert line["path"].startswith("<object object")  # not JSON: its text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("rediss://user:pw@h:6380/1", "rediss://user:***@h:6380/1"),
        ("nats://token@h:4222", "nats://***@h:4222"),
        ("redis+cluster://:a@h1:7000,:b@h2:7001", "redis+cluster://:***@h1:7000,:***@h2:7001"),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("memory://", "memory://"),
    ],
)
def test_urls_lose_their_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_the_throttle_reports_what_it_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("roomcast.ratelimit.time.monotonic", lambda: clock[0])
    throttle = Throttle(rate=1.0, burst=2)
    assert [throttle.allow() for _ in range(5)] == [0, 0, None, None, None]
    clock[0] += 1.0
    assert throttle.allow() == 3
    assert throttle.allow() is None

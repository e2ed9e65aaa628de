"""Connection tokens on the wire: 401 before the upgrade, expiry, grace and refresh."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import websockets
from conftest import ServerFactory
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from oneway_client import OneWay
from test_auth import unsigned
from websockets.exceptions import ConnectionClosed, InvalidStatus

from roomcast.auth import mint
from roomcast.testing import ServerProcess

SECRET = "lifecycle-test-secret-0123456789abcdef"
GRACE = 1.0


def token(user: str = "alice", ttl: float | None = 600, key: str = SECRET) -> str:
    return mint(user, key=key.encode(), join=("lobby",), publish=("lobby",), ttl=ttl)


BAD_TOKENS = {
    "missing": None,
    "expired": token(ttl=-60),
    "malformed": "abc.def",
    "wrongly signed": token(key="another-secret-0123456789abcdef!!"),
    "unsigned": unsigned({"sub": "alice"}),
}
EXPECTED_CODES = {"expired": "token_expired"}


@pytest.fixture
def server(server_factory: ServerFactory) -> ServerProcess:
    return server_factory(
        "--history", "memory", "--auth", "required", "--token-secret", SECRET,
        "--token-grace", str(GRACE),
    )  # fmt: skip


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_a_bad_or_missing_token_gets_401_before_the_upgrade(
    server: ServerProcess, case: str
) -> None:
    bad = BAD_TOKENS[case]
    url = server.ws_url if bad is None else f"{server.ws_url}?token={bad}"
    with pytest.raises(InvalidStatus) as info:
        await websockets.connect(url)
    response = info.value.response
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="roomcast"'
    body = json.loads(response.body or b"{}")
    assert (body["type"], body["code"]) == ("error", EXPECTED_CODES.get(case, "unauthorized"))


@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_a_bad_or_missing_token_gets_401_on_sse_and_polling(
    server: ServerProcess, http: aiohttp.ClientSession, case: str
) -> None:
    bad = BAD_TOKENS[case]
    client = OneWay(http, server.http_url)
    params = {"rooms": "lobby"} | ({} if bad is None else {"token": bad})
    expected = (401, EXPECTED_CODES.get(case, "unauthorized"))
    status, body = await client.sse_error(**params)
    assert (status, body["code"]) == expected
    status, body = await client.poll(**params)
    assert (status, body["code"]) == expected
    headers = {} if bad is None else {"Authorization": f"Bearer {bad}"}
    async with http.get(server.http_url + "/sse?rooms=lobby", headers=headers) as reply:
        assert (reply.status, (await reply.json())["code"]) == expected


async def test_the_token_names_the_user_whatever_the_name_asked(server: ServerProcess) -> None:
    async with websockets.connect(
        f"{server.ws_url}?name=mallory", additional_headers={"Authorization": f"Bearer {token()}"}
    ) as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "join", "room": "lobby", "id": 1}))
        await ws.send(json.dumps({"type": "presence", "room": "lobby", "id": 2}))
        presence = await _recv(ws)
        while presence.get("id") != 2:
            presence = await _recv(ws)
    assert [member["user"] for member in presence["members"]] == ["alice"]


async def _recv(ws: websockets.ClientConnection, timeout: float = 10) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return value


async def test_an_expired_connection_is_closed_with_4003_after_the_grace(
    server: ServerProcess,
) -> None:
    expires = int(time.time()) + 2
    short = mint("alice", key=SECRET.encode(), join=("lobby",), ttl=expires - time.time())
    async with websockets.connect(f"{server.ws_url}?token={short}") as ws:
        assert (await _recv(ws))["type"] == "welcome"
        error = await _recv(ws, timeout=15)
        closed_at = time.time()
        assert error == {"type": "error", "code": "token_expired",
                         "message": "the connection token expired"}  # fmt: skip
        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is not None
    assert (info.value.rcvd.code, info.value.rcvd.reason) == (4003, "token expired")
    assert closed_at >= expires + GRACE - 0.05  # not before the grace has passed


async def test_a_refresh_keeps_the_connection_past_the_old_expiry(server: ServerProcess) -> None:
    short = token(ttl=1)
    async with websockets.connect(f"{server.ws_url}?token={short}") as ws:
        await _recv(ws)
        await ws.send(json.dumps({"type": "refresh", "token": token(ttl=60), "id": 1}))
        reply = await _recv(ws)
        assert reply["type"] == "ok" and reply["id"] == 1
        assert time.time() + 50 < reply["expires"] <= time.time() + 60
        # another user's token, or a bad one, is refused and changes nothing
        await ws.send(json.dumps({"type": "refresh", "token": token("bob"), "id": 2}))
        assert (await _recv(ws))["code"] == "forbidden"
        await ws.send(json.dumps({"type": "refresh", "token": "garbage", "id": 3}))
        assert (await _recv(ws))["code"] == "unauthorized"
        # well past the first token's expiry and grace the connection still works
        deadline = time.time() + 1 + GRACE + 1.5
        while time.time() < deadline:
            await ws.send(json.dumps({"type": "ping", "id": 4}))
            assert (await _recv(ws)) == {"type": "pong", "id": 4}
            await asyncio.sleep(0.25)  # paces the probe; nothing is waited for here


async def test_an_expired_sse_stream_ends_with_token_expired(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    client = OneWay(http, server.http_url)
    stream = await client.sse(rooms="lobby", token=token(ttl=1))
    assert (await stream.until("welcome")).data["type"] == "welcome"
    error = await stream.until("error", timeout=15)
    assert error.data["code"] == "token_expired"
    assert await stream.ended()


async def test_a_one_way_session_is_refused_after_expiry_until_it_refreshes(
    server: ServerProcess, http: aiohttp.ClientSession
) -> None:
    client = OneWay(http, server.http_url)
    status, first = await client.poll(rooms="lobby", token=token(ttl=1))
    assert status == 200
    session = first["session"]
    status, reply = await client.send(session, {"type": "ping", "id": 1})
    assert (status, reply) == (200, {"type": "pong", "id": 1})
    # past the expiry and the grace: every request but refresh is refused
    deadline = time.time() + 10
    while True:
        status, reply = await client.send(session, {"type": "ping", "id": 2})
        if status != 200 or time.time() > deadline:
            break
        await asyncio.sleep(0.2)  # paces the probe until the server's clock passes the grace
    assert (status, reply["code"]) == (401, "token_expired")
    status, reply = await client.poll(session=session, cursor=first["cursor"], timeout="0")
    assert (status, reply["code"]) == (401, "token_expired")
    status, reply = await client.send(session, {"type": "refresh", "token": token(), "id": 3})
    assert status == 200 and reply["type"] == "ok"
    status, answer = await client.poll(session=reply["session"], cursor=first["cursor"],
                                       timeout="0")  # fmt: skip
    assert status == 200 and answer["events"] == []


async def test_a_server_with_a_public_key_takes_rs256_tokens(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = tmp_path / "public.pem"
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))  # fmt: skip
    server = server_factory("--history", "memory", "--auth", "required",
                            "--token-public-key", str(public))  # fmt: skip
    good = mint("carol", key=key, join=("lobby",), algorithm="RS256")
    async with websockets.connect(server.ws_url, additional_headers={
            "Authorization": f"Bearer {good}"}) as ws:  # fmt: skip
        assert (await _recv(ws))["type"] == "welcome"
        await ws.send(json.dumps({"type": "join", "room": "lobby", "id": 1}))
        assert (await _recv(ws))["type"] == "ok"
    with pytest.raises(InvalidStatus) as info:  # an HS256 token: no secret configured
        await websockets.connect(f"{server.ws_url}?token={token()}")
    assert info.value.response.status_code == 401

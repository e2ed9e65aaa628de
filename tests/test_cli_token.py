"""`roomcast token`, the security options of `roomcast serve`, and what the log never says."""

from __future__ import annotations

import json
import time
from pathlib import Path

import aiohttp
import jwt
import pytest
import websockets
from conftest import ServerFactory
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from test_cli import roomcast
from websockets.exceptions import InvalidStatus

SECRET = "cli-token-test-secret-0123456789abcdef"


def test_token_mints_a_token_the_server_accepts() -> None:
    result = roomcast("token", "--sub", "alice", "--rooms", "chat:*,lobby", "--read", "news:*",
                      "--ttl", "120", "--secret", SECRET)  # fmt: skip
    assert result.returncode == 0, result.stderr
    claims = jwt.decode(result.stdout.strip(), SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice"
    rooms = {"join": ["news:*", "chat:*", "lobby"], "publish": ["chat:*", "lobby"]}
    assert claims["rooms"] == rooms
    assert 100 < claims["exp"] - time.time() <= 120


def test_token_with_an_es256_key(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    private = tmp_path / "key.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))  # fmt: skip
    result = roomcast("token", "--sub", "bob", "--ttl", "0", "--private-key", str(private))
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert jwt.get_unverified_header(token)["alg"] == "ES256"
    claims = jwt.decode(token, key.public_key(), algorithms=["ES256"])
    assert "exp" not in claims  # --ttl 0: it never expires


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--sub", "a"], "give exactly one of --secret and --private-key"),
        (["--sub", "a", "--secret", "short"], "at least 32 bytes"),
    ],
)
def test_token_refuses_bad_keys(args: list[str], error: str) -> None:
    result = roomcast("token", *args)
    assert result.returncode == 2
    assert error in result.stderr


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--auth", "required"], "--auth required needs --token-secret or --token-public-key"),
        (["--token-secret", "short"], "--token-secret must be at least 32 bytes"),
        (["--max-connections", "-1"], "--max-connections must be >= 0"),
        (["--handshake-timeout", "0"], "--handshake-timeout must be positive"),
        (["--trusted-proxies", "10.0.0.0/8,nope"], "'nope' is not an address or a network"),
    ],
)
def test_bad_security_settings_are_refused_before_starting(args: list[str], error: str) -> None:
    result = roomcast("serve", *args)
    assert result.returncode == 2
    assert error in result.stderr


def test_a_bad_config_file_is_refused_before_starting(tmp_path: Path) -> None:
    config = tmp_path / "roomcast.toml"
    config.write_text('[namespaces."a:*"]\npublish = "nobody"\n')
    result = roomcast("serve", "--config", str(config))
    assert result.returncode == 2
    assert str(config) in result.stderr and "publish" in result.stderr


async def test_secrets_and_tokens_never_reach_the_log(server_factory: ServerFactory) -> None:
    api_key, session_secret = "api-key-0123456789-abcdefghij", "session-secret-0123456789abcdef"
    server = server_factory(
        "--history", "memory", "--auth", "required", "--token-secret", SECRET,
        "--secret", session_secret, "--api-key", api_key, "--log-level", "debug",
    )  # fmt: skip
    good = roomcast("token", "--sub", "alice", "--rooms", "lobby", "--secret", SECRET).stdout
    good = good.strip()
    forged = jwt.encode({"sub": "mallory"}, "x" * 32, algorithm="HS256")
    with pytest.raises(InvalidStatus):
        await websockets.connect(f"{server.ws_url}?token={forged}")
    body = "a-message-body-0123456789"  # what clients say is not the log's business either
    async with websockets.connect(f"{server.ws_url}?token={good}") as ws:
        await ws.recv()
        await ws.send(json.dumps({"type": "refresh", "token": forged, "id": 1}))
        assert json.loads(await ws.recv())["code"] == "unauthorized"
        await ws.send(json.dumps({"type": "join", "room": "lobby", "id": 2}))
        await ws.send(json.dumps({"type": "publish", "room": "lobby", "data": body, "id": 3}))
        while (reply := json.loads(await ws.recv())).get("id") != 3:
            pass
        assert reply["type"] == "ok"
    async with aiohttp.ClientSession() as http:
        for key in ("wrong-key-0123456789", api_key):
            await http.post(server.http_url + "/api/publish", json={"room": "r", "data": body},
                            headers={"Authorization": f"Bearer {key}"})  # fmt: skip
    server.stop()
    log = server.log()
    assert "roomcast serving on" in log and "stopped" in log
    assert "auth failure: invalid token" in log and "auth failure: missing or wrong API key" in log
    for secret in (api_key, session_secret, SECRET, good, forged, "wrong-key-0123456789", body):
        assert secret not in log

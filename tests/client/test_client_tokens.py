"""The client's connection tokens: sent on every connection, refreshed before expiry."""

from __future__ import annotations

import asyncio
import time

import pytest
from conftest import ServerFactory

from roomcast.auth import mint
from roomcast.client.client import Client, ConnectError
from roomcast.client.tokens import MIN_AHEAD, expires_of, refresh_delay

SECRET = "client-token-test-secret-0123456789abcdef"


def token(ttl: float | None = 600, user: str = "alice") -> str:
    return mint(user, key=SECRET.encode(), join=("lobby",), publish=("lobby",), ttl=ttl)


def test_expiry_is_read_from_the_token_without_verifying_it() -> None:
    exp = int(time.time()) + 100
    assert expires_of(token(ttl=exp - time.time())) == exp
    assert expires_of(token(ttl=None)) == 0.0
    assert [expires_of(bad) for bad in ("", "a.b.c", "a.e30.c", "a.WzFd.c")] == [0, 0, 0, 0]
    assert refresh_delay(token(ttl=None)) is None
    now = time.time()
    assert refresh_delay(token(ttl=100), now=now) == pytest.approx(90, abs=1)
    assert refresh_delay(token(ttl=20), now=now) == pytest.approx(20 - MIN_AHEAD, abs=1)
    assert refresh_delay(token(ttl=-5)) == 0.0


async def test_a_static_token_is_sent_and_a_bad_one_refused(server_factory: ServerFactory) -> None:
    server = server_factory("--history", "memory", "--auth", "required", "--token-secret", SECRET)
    async with Client(server.ws_url, token=token()) as client:
        assert (await client.join("lobby"))["type"] == "ok"
        assert (await client.presence("lobby"))[0]["user"] == "alice"
    with pytest.raises(ConnectError, match="401"):
        await Client(server.ws_url, token=token(ttl=-60)).connect()
    with pytest.raises(ConnectError, match="401"):
        await Client(server.ws_url).connect()


async def test_a_provider_keeps_a_long_connection_alive_past_expiry(
    server_factory: ServerFactory,
) -> None:
    server = server_factory(
        "--history", "memory", "--auth", "required", "--token-secret", SECRET,
        "--token-grace", "0.5",
    )  # fmt: skip
    issued: list[float] = []

    async def provider() -> str:
        issued.append(time.time())
        return token(ttl=MIN_AHEAD + 2)  # refreshed 2 s after each issue

    async with Client(server.ws_url, token=provider) as client:
        await client.join("lobby")
        first_expiry = expires_of(client.tokens.current or "")
        session = client.session_id
        # what is tested is the passing of time: past the first token's expiry and grace
        await asyncio.sleep(first_expiry + 0.5 + 1.0 - time.time())
        assert len(issued) >= 3  # the connection's token, then refreshes every ~2 s
        assert await client.publish("lobby", "still here") == 1
        assert client.session_id == session
    # no reconnection happened: one connection the whole time
    assert [event["type"] for event in _drain(client)] == ["message"]


def _drain(client: Client) -> list[dict[str, object]]:
    events = []
    queue = client._events
    while not queue.empty():
        event = queue.get_nowait()
        if event is not None:
            events.append(event)
    return events

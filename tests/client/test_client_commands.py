"""Every Client command against a real server: exact replies, events and error codes."""

from __future__ import annotations

import json
import re

import pytest

from roomcast.client import Client, CommandError, ConnectError, ConnectionLost
from roomcast.testing import ServerProcess, free_port

from .conftest import ClientFactory
from .helpers import Events, ServerFactory, http_publish, payloads


async def test_join_returns_the_ok(server: ServerProcess, client_factory: ClientFactory) -> None:
    client = await client_factory(server.ws_url, name="alice")
    ok = await client.join("lobby")
    assert ok == {"type": "ok", "id": 1, "room": "lobby", "epoch": ok["epoch"], "offset": 0}
    assert re.fullmatch(r"[0-9a-f]{8}", ok["epoch"])
    assert client.rooms == ["lobby"]
    assert client.position("lobby") == (ok["epoch"], 0)
    assert client.lost("lobby") is False


async def test_join_reports_the_newest_offset(
    server: ServerProcess, client_factory: ClientFactory
) -> None:
    for n in range(3):
        http_publish(server, "lobby", {"n": n})
    client = await client_factory(server.ws_url)
    ok = await client.join("lobby")
    assert ok["offset"] == 3
    assert client.position("lobby") == (ok["epoch"], 3)


async def test_welcome_and_name(server: ServerProcess, client_factory: ClientFactory) -> None:
    named = await client_factory(server.ws_url, name="alice")
    anonymous = await client_factory(server.ws_url)
    assert named.welcome is not None and named.welcome["type"] == "welcome"
    assert set(named.welcome) >= {"type", "session", "node", "heartbeat"}
    assert named.session_id == named.welcome["session"]
    await named.join("lobby")
    await anonymous.join("lobby")
    users = sorted(member["user"] for member in await named.presence("lobby"))
    assert users[0] == "alice"
    assert re.fullmatch(r"anon-[0-9a-f]{8}", users[1])


async def test_publish_returns_offsets_and_everyone_gets_the_message(
    server: ServerProcess, client_factory: ClientFactory
) -> None:
    alice = await client_factory(server.ws_url, name="alice")
    bob = await client_factory(server.ws_url, name="bob")
    epoch = (await alice.join("lobby"))["epoch"]
    await bob.join("lobby")
    assert await alice.publish("lobby", {"text": "hi"}) == 1
    assert await alice.publish("lobby", [1, "two", None]) == 2
    for client in (alice, bob):
        first, second = await Events(client).messages(2)
        assert first == {
            "type": "message", "room": "lobby", "epoch": epoch, "offset": 1,
            "data": {"text": "hi"}, "from": {"session": alice.session_id, "user": "alice"},
            "ts": first["ts"],
        }  # fmt: skip
        assert isinstance(first["ts"], int)
        assert (second["offset"], second["data"]) == (2, [1, "two", None])
    assert bob.position("lobby") == (epoch, 2)


async def test_messages_skips_other_events(
    server: ServerProcess, client_factory: ClientFactory
) -> None:
    alice = await client_factory(server.ws_url, name="alice")
    await alice.join("lobby")
    bob = await client_factory(server.ws_url, name="bob")
    await bob.join("lobby")  # alice gets a joined event first
    await bob.publish("lobby", "x")
    message = await anext(aiter(alice.messages()))
    assert (message["type"], message["offset"], message["data"]) == ("message", 1, "x")


async def test_joined_and_left_events(server: ServerProcess, client_factory: ClientFactory) -> None:
    alice = await client_factory(server.ws_url, name="alice")
    await alice.join("lobby")
    events = Events(alice)
    bob = await client_factory(server.ws_url, name="bob")
    await bob.join("lobby")
    member = {"session": bob.session_id, "user": "bob"}
    assert await events.next() == {"type": "joined", "room": "lobby", "member": member}
    await bob.leave("lobby")
    assert await events.next() == {"type": "left", "room": "lobby", "member": member}
    await bob.join("lobby")
    assert await events.next() == {"type": "joined", "room": "lobby", "member": member}
    await bob.close()  # a dropped connection leaves too
    assert await events.next() == {"type": "left", "room": "lobby", "member": member}


async def test_presence(server: ServerProcess, client_factory: ClientFactory) -> None:
    alice = await client_factory(server.ws_url, name="alice")
    bob = await client_factory(server.ws_url, name="bob")
    await alice.join("lobby")
    assert await alice.presence("lobby") == [{"session": alice.session_id, "user": "alice"}]
    await bob.join("lobby")
    members = await alice.presence("lobby")
    assert sorted(members, key=lambda m: m["user"]) == [
        {"session": alice.session_id, "user": "alice"},
        {"session": bob.session_id, "user": "bob"},
    ]


async def test_history(server: ServerProcess, client_factory: ClientFactory) -> None:
    client = await client_factory(server.ws_url, name="alice")
    await client.join("lobby")
    for n in range(1, 6):
        assert await client.publish("lobby", {"n": n}) == n
    live = await Events(client).messages(5)
    assert await client.history("lobby") == live
    assert payloads(await client.history("lobby", limit=2)) == [(4, {"n": 4}), (5, {"n": 5})]
    assert payloads(await client.history("lobby", limit=2, before=4)) == [
        (2, {"n": 2}),
        (3, {"n": 3}),
    ]
    assert await client.history("lobby", before=1) == []


async def test_ping(server: ServerProcess, client_factory: ClientFactory) -> None:
    client = await client_factory(server.ws_url)
    rtt = await client.ping()
    assert 0 <= rtt < 5


async def test_leave_stops_the_room(server: ServerProcess, client_factory: ClientFactory) -> None:
    alice = await client_factory(server.ws_url, name="alice")
    await alice.join("a")
    await alice.join("b")
    await alice.leave("a")
    assert alice.rooms == ["b"]
    assert alice.position("a") is None
    http_publish(server, "a", "not for alice")
    http_publish(server, "b", "for alice")
    message = await Events(alice).next("message")
    assert (message["room"], message["data"]) == ("b", "for alice")
    assert await alice.presence("b") == [{"session": alice.session_id, "user": "alice"}]
    with pytest.raises(CommandError) as error:
        await alice.leave("a")
    assert error.value.code == "not_joined"


async def test_request_sends_any_command(
    server: ServerProcess, client_factory: ClientFactory
) -> None:
    client = await client_factory(server.ws_url)
    assert await client.request({"type": "ping"}) == {"type": "pong", "id": 1}
    with pytest.raises(CommandError) as error:
        await client.request({"type": "shout"})
    assert error.value.code == "unknown_type"
    assert error.value.message == "unknown command type 'shout'"
    with pytest.raises(CommandError) as error:
        await client.request({"type": "history", "room": "lobby", "limit": 0})
    assert error.value.code == "bad_request"
    assert await client.ping() >= 0  # errors never end the session


async def test_commands_outside_the_room_are_not_joined(
    server: ServerProcess, client_factory: ClientFactory
) -> None:
    client = await client_factory(server.ws_url)
    for call in (
        client.publish("lobby", 1),
        client.presence("lobby"),
        client.history("lobby"),
        client.leave("lobby"),
    ):
        with pytest.raises(CommandError) as error:
            await call
        assert error.value.code == "not_joined"
        assert "'lobby'" in error.value.message
        assert str(error.value) == f"not_joined: {error.value.message}"


async def test_invalid_room(server: ServerProcess, client_factory: ClientFactory) -> None:
    client = await client_factory(server.ws_url)
    with pytest.raises(CommandError) as error:
        await client.join("no spaces")
    assert error.value.code == "invalid_room"
    assert client.rooms == []


async def test_forbidden_too_large_and_rate_limited(
    server_factory: ServerFactory, client_factory: ClientFactory
) -> None:
    server = server_factory(
        "--history", "memory", "--readonly-rooms", "news:*", "--max-data-size", "32",
        "--max-rooms", "2",
    )  # fmt: skip
    client = await client_factory(server.ws_url)
    await client.join("news:today")
    with pytest.raises(CommandError) as error:
        await client.publish("news:today", "hi")
    assert error.value.code == "forbidden"
    await client.join("lobby")
    with pytest.raises(CommandError) as error:
        await client.publish("lobby", "x" * 64)
    assert error.value.code == "too_large"
    assert await client.publish("lobby", "x" * 16) == 1
    with pytest.raises(CommandError) as error:
        await client.join("third")
    assert error.value.code == "rate_limited"
    assert client.rooms == ["news:today", "lobby"]


async def test_on_frame_sees_every_frame(
    server: ServerProcess, client_factory: ClientFactory
) -> None:
    frames: list[str] = []
    client = await client_factory(server.ws_url, name="alice", on_frame=frames.append)
    await client.join("lobby")
    await client.publish("lobby", {"text": "hi"})
    await Events(client).next("message")
    kinds = [json.loads(frame)["type"] for frame in frames]
    assert kinds[:2] == ["welcome", "ok"]
    assert sorted(kinds[2:]) == ["message", "ok"]  # the publish's ok and its message
    assert json.loads(frames[0]) == client.welcome


async def test_connect_errors(server: ServerProcess) -> None:
    with pytest.raises(ConnectError):
        await Client(f"ws://127.0.0.1:{free_port()}/ws", timeout=2).connect()
    with pytest.raises(ConnectError):  # names are 1-64 characters: HTTP 400
        await Client(server.ws_url, name="x" * 65).connect()


async def test_close_ends_iterators_and_commands(
    server: ServerProcess, client_factory: ClientFactory
) -> None:
    client = await client_factory(server.ws_url)
    await client.join("lobby")
    await client.publish("lobby", 1)
    events = Events(client)
    await client.close()
    assert client.closed and not client.connected
    assert (await events.next())["offset"] == 1  # what was received is still delivered
    with pytest.raises(StopAsyncIteration):
        await events.next()
    with pytest.raises(ConnectionLost):
        await client.ping()
    await client.close()  # twice is fine


async def test_async_with(server: ServerProcess) -> None:
    async with Client(server.ws_url, name="alice") as client:
        assert client.connected
        await client.join("lobby")
        assert await client.publish("lobby", "hi") == 1
    assert client.closed


async def test_data_that_is_not_json_is_refused_locally(
    server: ServerProcess, client_factory: ClientFactory
) -> None:
    client = await client_factory(server.ws_url)
    await client.join("lobby")
    with pytest.raises(TypeError):
        await client.publish("lobby", {"when": object()})
    assert await client.publish("lobby", "fine") == 1

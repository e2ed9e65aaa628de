"""Reconnection and recovery against real servers that restart under the client.

``server.restart()`` and ``http_publish`` block, so the test's event loop (and with it
the client) stands still while they run: the client cannot reconnect before the
messages it must recover are published. That makes the recovery path deterministic.
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from roomcast.client import Backoff, CommandError, ConnectionLost
from roomcast.testing import ServerProcess

from .conftest import ClientFactory
from .helpers import Events, ServerFactory, http_publish, payloads, ws_publish


async def test_recovers_missed_messages_exactly_once_sqlite(
    server_factory: ServerFactory, client_factory: ClientFactory
) -> None:
    server = server_factory("--api-key", "test-key")  # SQLite history survives restarts
    client = await client_factory(server.ws_url, name="alice")
    events = Events(client)
    epoch = (await client.join("lobby"))["epoch"]
    await client.join("side")
    for n in (1, 2, 3):
        assert await client.publish("lobby", {"n": n}) == n
    assert payloads(await events.messages(3)) == [(1, {"n": 1}), (2, {"n": 2}), (3, {"n": 3})]
    session = client.session_id

    server.restart()
    http_publish(server, "lobby", {"n": 4})
    ws_publish(server, "lobby", {"n": 5})
    http_publish(server, "side", {"s": 1})
    http_publish(server, "lobby", {"n": 6})

    assert await events.next() == {"type": "disconnected", "code": 1012}
    recovered = [await events.next() for _ in range(4)]  # replayed before the rejoin ok
    assert sorted((m["room"], m["offset"]) for m in recovered) == [
        ("lobby", 4), ("lobby", 5), ("lobby", 6), ("side", 1),
    ]  # fmt: skip
    lobby = [m for m in recovered if m["room"] == "lobby"]
    assert payloads(lobby) == [(4, {"n": 4}), (5, {"n": 5}), (6, {"n": 6})]
    assert {m["epoch"] for m in lobby} == {epoch}
    assert lobby[1]["from"]["user"] == "bob" and lobby[0]["from"] is None
    reconnected = await events.next()
    assert reconnected == {"type": "reconnected", "session": client.session_id}
    assert client.session_id != session
    assert client.connected

    assert await client.publish("lobby", {"n": 7}) == 7  # live again, no duplicate before it
    assert payloads(await events.messages(1)) == [(7, {"n": 7})]
    assert [e["type"] for e in events.seen].count("message") == 8
    assert not client.lost("lobby") and not client.lost("side")
    assert client.position("lobby") == (epoch, 7)


async def test_memory_history_restart_is_lost(
    server: ServerProcess, client_factory: ClientFactory
) -> None:
    client = await client_factory(server.ws_url, name="alice")
    events = Events(client)
    old_epoch = (await client.join("lobby"))["epoch"]
    await client.publish("lobby", "a")
    await client.publish("lobby", "b")
    assert payloads(await events.messages(2)) == [(1, "a"), (2, "b")]

    server.restart()  # memory history: the room's stream starts over with a new epoch
    http_publish(server, "lobby", "missed")

    assert (await events.next())["type"] == "disconnected"
    lost = await events.next()
    assert lost == {"type": "lost", "room": "lobby", "epoch": lost["epoch"], "offset": 1}
    assert lost["epoch"] != old_epoch
    assert (await events.next())["type"] == "reconnected"
    assert client.lost("lobby")
    # Offset 2 of the new epoch is newer than offset 2 of the old one: not a duplicate.
    assert await client.publish("lobby", "new") == 2
    message = await events.next()
    assert (message["epoch"], message["offset"], message["data"]) == (lost["epoch"], 2, "new")
    assert client.position("lobby") == (lost["epoch"], 2)


async def test_commands_wait_for_the_reconnection(
    server: ServerProcess, client_factory: ClientFactory
) -> None:
    client = await client_factory(server.ws_url)
    events = Events(client)
    await client.join("lobby")
    server.stop()
    assert (await events.next())["type"] == "disconnected"
    assert not client.connected
    publish = asyncio.create_task(client.publish("lobby", "sent while down"))
    done, _ = await asyncio.wait({publish}, timeout=0.3)
    assert not done  # it waits rather than failing
    server.start()
    assert await asyncio.wait_for(publish, 10) == 1  # memory history: a fresh room
    assert (await events.next("message"))["data"] == "sent while down"


async def test_timeout_covers_the_wait_for_a_connection(
    server: ServerProcess, client_factory: ClientFactory
) -> None:
    client = await client_factory(server.ws_url, timeout=0.5)
    events = Events(client)
    server.stop()
    await events.next("disconnected")
    with pytest.raises(TimeoutError, match=r"no reply to 'ping' within 0\.5s"):
        await client.ping()
    with pytest.raises(TimeoutError):
        await client.request({"type": "ping"}, timeout=0.1)


async def test_pending_command_gets_connection_lost(
    server: ServerProcess, client_factory: ClientFactory
) -> None:
    client = await client_factory(server.ws_url)
    await client.ping()
    os.kill(server.pid, signal.SIGSTOP)  # frozen: it reads nothing, answers nothing
    try:
        ping = asyncio.create_task(client.ping())
        for _ in range(20):  # let the ping reach the socket (no timer involved)
            await asyncio.sleep(0)
        assert not ping.done()
    finally:
        server.kill()  # the kernel resets the connection with the ping unanswered
    with pytest.raises(ConnectionLost, match="dropped before the reply"):
        await asyncio.wait_for(ping, 10)


async def test_dedup_of_a_replay_the_client_already_delivered(
    server: ServerProcess, client_factory: ClientFactory
) -> None:
    client = await client_factory(server.ws_url)
    events = Events(client)
    epoch = (await client.join("lobby"))["epoch"]
    for n in (1, 2, 3):
        await client.publish("lobby", n)
    assert payloads(await events.messages(3)) == [(1, 1), (2, 2), (3, 3)]
    # Asking again from offset 0 (the server may replay 1-3): none is delivered twice.
    await client.join("lobby", since=(epoch, 0))
    await client.publish("lobby", 4)
    assert payloads(await events.messages(1)) == [(4, 4)]
    assert not client.lost("lobby")


async def test_join_since_resumes_a_persisted_position(
    server: ServerProcess, client_factory: ClientFactory
) -> None:
    for n in (1, 2, 3):
        http_publish(server, "lobby", n)
    first = await client_factory(server.ws_url)
    epoch = (await first.join("lobby"))["epoch"]
    resumed = await client_factory(server.ws_url)
    ok = await resumed.join("lobby", since=(epoch, 1))
    assert ok == {
        "type": "ok", "id": 1, "room": "lobby", "epoch": epoch, "offset": 3, "recovered": True,
    }  # fmt: skip
    assert payloads(await Events(resumed).messages(2)) == [(2, 2), (3, 3)]
    assert resumed.position("lobby") == (epoch, 3)
    assert not resumed.lost("lobby")


async def test_join_since_an_unknown_epoch_is_lost(
    server: ServerProcess, client_factory: ClientFactory
) -> None:
    http_publish(server, "lobby", 1)
    client = await client_factory(server.ws_url)
    events = Events(client)
    ok = await client.join("lobby", since=("00000000", 5))
    assert ok["recovered"] is False
    assert await events.next() == {
        "type": "lost", "room": "lobby", "epoch": ok["epoch"], "offset": 1,
    }  # fmt: skip
    assert client.lost("lobby")
    http_publish(server, "lobby", 2)
    assert payloads(await events.messages(1)) == [(2, 2)]


async def test_failed_join_since_forgets_the_room(
    server: ServerProcess, client_factory: ClientFactory
) -> None:
    client = await client_factory(server.ws_url)
    with pytest.raises(CommandError):
        await client.join("bad room", since=("00000000", 0))
    assert client.rooms == [] and client.position("bad room") is None


async def test_gives_up_after_max_attempts(
    server: ServerProcess, client_factory: ClientFactory
) -> None:
    backoff = Backoff(base=0.01, cap=0.05, max_attempts=2)
    client = await client_factory(server.ws_url, backoff=backoff)
    events = Events(client)
    server.stop()
    assert (await events.next())["type"] == "disconnected"
    with pytest.raises(ConnectionLost, match="gave up reconnecting after 2 attempts"):
        await events.next()
    assert client.closed
    with pytest.raises(ConnectionLost, match="gave up"):
        await client.ping()


async def test_no_reconnect_when_disabled(
    server: ServerProcess, client_factory: ClientFactory
) -> None:
    client = await client_factory(server.ws_url, reconnect=False)
    events = Events(client)
    server.stop()
    assert await events.next() == {"type": "disconnected", "code": 1012}
    with pytest.raises(ConnectionLost, match=r"closed \(code 1012\)"):
        await events.next()


async def test_user_close_does_not_reconnect(
    server: ServerProcess, client_factory: ClientFactory
) -> None:
    client = await client_factory(server.ws_url, name="alice")
    await client.join("lobby")
    watcher = await client_factory(server.ws_url)
    await watcher.join("lobby")
    events = Events(watcher)
    await client.close()
    left = await events.next()
    assert left["type"] == "left" and left["member"]["user"] == "alice"
    members = await watcher.presence("lobby")
    assert [member["session"] for member in members] == [watcher.session_id]
    assert client.closed and not client.connected


async def test_trimmed_history_is_lost(
    server_factory: ServerFactory, client_factory: ClientFactory
) -> None:
    server = server_factory("--api-key", "test-key", "--history-size", "2")
    client = await client_factory(server.ws_url)
    events = Events(client)
    epoch = (await client.join("lobby"))["epoch"]
    await client.publish("lobby", 1)
    assert payloads(await events.messages(1)) == [(1, 1)]

    server.restart()
    for n in (2, 3, 4):  # offset 2 falls out of the 2 kept messages
        http_publish(server, "lobby", n)

    assert (await events.next())["type"] == "disconnected"
    assert await events.next() == {"type": "lost", "room": "lobby", "epoch": epoch, "offset": 4}
    assert (await events.next())["type"] == "reconnected"
    assert client.lost("lobby") and client.position("lobby") == (epoch, 4)
    http_publish(server, "lobby", 5)
    assert payloads(await events.messages(1)) == [(5, 5)]


async def test_a_room_refused_on_rejoin_is_reported(
    server_factory: ServerFactory, client_factory: ClientFactory
) -> None:
    server = server_factory()  # SQLite history: "a" recovers
    client = await client_factory(server.ws_url)
    events = Events(client)
    await client.join("a")
    await client.join("b")
    server.args += ["--max-rooms", "1"]  # the restarted server allows one room only
    server.restart()
    assert (await events.next())["type"] == "disconnected"
    refused = await events.next()
    assert refused == {
        "type": "rejoin_failed", "room": "b", "code": "rate_limited",
        "message": "already in 1 rooms, the most allowed",
    }  # fmt: skip
    assert (await events.next())["type"] == "reconnected"
    assert client.rooms == ["a"] and client.position("b") is None
    assert await client.publish("a", "still here") == 1
    assert (await events.next())["data"] == "still here"


async def test_replay_and_live_messages_meet_without_gap_or_duplicate(
    server_factory: ServerFactory, client_factory: ClientFactory
) -> None:
    server = server_factory("--api-key", "test-key")
    client = await client_factory(server.ws_url, name="alice")
    events = Events(client)
    await client.join("lobby")
    assert await client.publish("lobby", 1) == 1
    await events.messages(1)

    server.restart()
    for n in range(2, 42):  # missed while the client was away: replayed on rejoin
        http_publish(server, "lobby", n)
    # Published while the client reconnects and rejoins: replay and live fan-out overlap.
    publisher = await client_factory(server.ws_url, name="bob")
    await publisher.join("lobby")
    offsets = await asyncio.gather(*(publisher.publish("lobby", n) for n in range(42, 142)))
    expected = {n: n for n in range(2, 42)} | dict(zip(offsets, range(42, 142), strict=True))

    messages = await events.messages(140)
    assert [m["offset"] for m in messages] == list(range(2, 142))
    assert {m["offset"]: m["data"] for m in messages} == expected
    assert await publisher.publish("lobby", "last") == 142
    assert payloads(await events.messages(1)) == [(142, "last")]
    assert not client.lost("lobby")

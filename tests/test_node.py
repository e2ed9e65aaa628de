"""The node and its sessions in one process: commands in, frames out, no sockets."""

from __future__ import annotations

import json

from roomcast.exceptions import CloseCode
from roomcast.node import Node
from roomcast.session import Session
from roomcast.testing import fake_session


async def send(session: Session, **command: object) -> None:
    await session.handle(json.dumps(command))


async def test_join_publish_fan_out_and_ack(node: Node) -> None:
    alice, alice_t = await fake_session(node, "alice")
    bob, bob_t = await fake_session(node, "bob")
    await send(alice, type="join", room="lobby", id=1)
    ok = await alice_t.receive()
    assert ok == {"type": "ok", "id": 1, "room": "lobby", "epoch": ok["epoch"], "offset": 0}
    await node.presence_agent.settled()  # alice's `joined` is out before bob is in
    await send(bob, type="join", room="lobby", id=1)
    assert (await bob_t.receive())["offset"] == 0
    await node.presence_agent.settled()
    assert await alice_t.receive() == {
        "type": "joined",
        "room": "lobby",
        "member": {"session": bob.id, "user": "bob"},
    }
    await send(bob, type="publish", room="lobby", data={"text": "hi"}, id=2)
    for transport in (alice_t, bob_t):
        message = await transport.receive()
        assert message == {
            "type": "message",
            "room": "lobby",
            "epoch": ok["epoch"],
            "offset": 1,
            "data": {"text": "hi"},
            "from": {"session": bob.id, "user": "bob"},
            "ts": message["ts"],
        }
    assert await bob_t.receive() == {
        "type": "ok", "id": 2, "room": "lobby", "epoch": ok["epoch"], "offset": 1
    }  # fmt: skip


async def test_offsets_are_gapless_and_ordered_per_room(node: Node) -> None:
    session, transport = await fake_session(node)
    await send(session, type="join", room="a", id="ja")
    await send(session, type="join", room="b", id="jb")
    for n in range(1, 21):
        await send(session, type="publish", room="a" if n % 2 else "b", data=n, id=n)
    replies = [await transport.receive() for _ in range(2 + 40)]
    messages = [f for f in replies if f["type"] == "message"]
    assert [m["offset"] for m in messages if m["room"] == "a"] == list(range(1, 11))
    assert [m["offset"] for m in messages if m["room"] == "b"] == list(range(1, 11))
    assert [m["data"] for m in messages if m["room"] == "a"] == list(range(1, 21, 2))
    acks = {
        f["id"]: f["offset"] for f in replies if f["type"] == "ok" and f["id"] not in {"ja", "jb"}
    }
    assert acks == {n: (n + 1) // 2 for n in range(1, 21)}


async def test_recovery_replays_exactly_what_was_missed(node: Node) -> None:
    writer, writer_t = await fake_session(node, "w")
    await send(writer, type="join", room="r", id=0)
    epoch = (await writer_t.receive())["epoch"]
    for n in range(1, 6):
        await send(writer, type="publish", room="r", data=n, id=n)
    await writer_t.until("ok")
    while (await writer_t.receive()).get("id") != 5:
        pass
    reader, reader_t = await fake_session(node, "r")
    await send(reader, type="join", room="r", since={"epoch": epoch, "offset": 2}, id=9)
    frames = [await reader_t.receive() for _ in range(4)]
    assert [f["offset"] for f in frames[:3]] == [3, 4, 5]
    assert [f["data"] for f in frames[:3]] == [3, 4, 5]
    assert frames[3] == {
        "type": "ok", "id": 9, "room": "r", "epoch": epoch, "offset": 5, "recovered": True
    }  # fmt: skip


async def test_recovery_refused_for_another_epoch_or_a_future_offset(node: Node) -> None:
    session, transport = await fake_session(node)
    await send(session, type="join", room="r", since={"epoch": "other", "offset": 0}, id=1)
    reply = await transport.receive()
    assert reply["recovered"] is False
    assert reply["offset"] == 0
    await send(session, type="leave", room="r", id=2)
    assert await transport.receive() == {"type": "ok", "id": 2, "room": "r"}
    since = {"epoch": reply["epoch"], "offset": 7}
    await send(session, type="join", room="r", since=since, id=3)
    assert (await transport.receive())["recovered"] is False


async def test_leave_and_disconnect_send_left(node: Node) -> None:
    a, a_t = await fake_session(node, "a")
    b, _ = await fake_session(node, "b")
    await send(a, type="join", room="r", id=1)
    await send(b, type="join", room="r", id=1)
    await a_t.until("joined")
    await send(b, type="leave", room="r", id=2)
    assert await a_t.receive() == {
        "type": "left", "room": "r", "member": {"session": b.id, "user": "b"}
    }  # fmt: skip
    await send(b, type="join", room="r", id=3)
    await a_t.until("joined")
    node.close_session(b)
    assert (await a_t.receive())["type"] == "left"
    assert [m.user for m in await node.presence("r")] == ["a"]


async def test_slow_consumer_is_cut_off_without_stopping_the_others(node: Node) -> None:
    fast, fast_t = await fake_session(node, "fast")
    slow, slow_t = await fake_session(node, "slow", max_frames=5)
    await send(slow, type="join", room="r", id=1)
    await send(fast, type="join", room="r", id=1)
    for n in range(10):
        await send(fast, type="publish", room="r", data=n, id=n + 10)
    messages: list[int] = []
    while len(messages) < 10:
        frame = await fast_t.receive()
        if frame["type"] == "message":
            messages.append(frame["data"])
    assert messages == list(range(10))
    assert slow_t.closed == (CloseCode.SLOW_CONSUMER, "slow consumer")
    assert slow.id not in node.sessions
    assert [m.user for m in await node.presence("r")] == ["fast"]


async def test_heartbeat_pings_then_closes_silent_sessions() -> None:
    from roomcast.config import Settings

    node = Node(Settings(history="memory", heartbeat=0.05))
    await node.start()
    try:
        _, silent_t = await fake_session(node, "silent")
        alive, alive_t = await fake_session(node, "alive")
        for _ in range(3):
            await alive_t.next_ping()
            alive.touch()  # as a pong would
        assert silent_t.closed == (CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")
        assert silent_t.pings == 1
        assert alive_t.closed is None
    finally:
        await node.drain()


async def test_drain_closes_every_session_with_1012(node: Node) -> None:
    transports = [(await fake_session(node, f"u{n}"))[1] for n in range(3)]
    await node.drain()
    assert [t.closed for t in transports] == [(1012, "server shutting down")] * 3
    assert node.state == "stopped"


async def test_a_failed_history_read_on_recovery_is_unavailable_not_lost() -> None:
    from roomcast.brokers.base import Page
    from roomcast.brokers.memory import MemoryBroker
    from roomcast.config import Settings
    from roomcast.exceptions import BrokerError
    from roomcast.history.memory import MemoryStore

    class FlakyBroker(MemoryBroker):
        failing = False

        async def read(
            self, room: str, *, after: int | None = None, before: int | None = None, limit: int
        ) -> Page:
            if self.failing and limit > 0:
                raise BrokerError("too many connections")
            return await super().read(room, after=after, before=before, limit=limit)

    broker = FlakyBroker(MemoryStore(100, 0))
    node = Node(Settings(history="memory", publish_rate=0), broker)
    await node.start()
    try:
        writer, writer_t = await fake_session(node, "w")
        await send(writer, type="join", room="r", id=0)
        epoch = (await writer_t.receive())["epoch"]
        for n in range(1, 4):
            await send(writer, type="publish", room="r", data=n, id=n)
        while (await writer_t.receive()).get("id") != 3:
            pass
        reader, reader_t = await fake_session(node, "r")
        broker.failing = True
        await send(reader, type="join", room="r", since={"epoch": epoch, "offset": 1}, id="a")
        reply = await reader_t.until("error")
        assert (reply["id"], reply["code"]) == ("a", "unavailable")
        assert "r" not in reader.rooms
        broker.failing = False
        await send(reader, type="join", room="r", since={"epoch": epoch, "offset": 1}, id="b")
        frames = [await reader_t.receive() for _ in range(3)]
        assert [f["offset"] for f in frames[:2]] == [2, 3]
        assert (frames[2]["id"], frames[2]["recovered"]) == ("b", True)
    finally:
        await node.drain()

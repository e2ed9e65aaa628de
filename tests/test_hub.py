"""Fan-out: one write per member per commit, offsets already sent are skipped."""

from __future__ import annotations

import json

from roomcast.node import Node
from roomcast.testing import fake_session


async def test_a_commit_reaches_each_member_in_one_write(node: Node) -> None:
    members = [await fake_session(node, f"u{n}") for n in range(3)]
    for session, _ in members:
        await session.handle(json.dumps({"type": "join", "room": "r", "id": 1}))
    await node.presence_agent.settled()  # every `joined` sent
    for _, transport in members:
        transport.take()
    writes_before = [transport.writes for _, transport in members]
    publisher = members[0][0]
    for n in range(5):  # one loop tick: one commit
        await publisher.handle(json.dumps({"type": "publish", "room": "r", "data": n}))
    await members[2][1].until("message")
    acks = [0, 0, 0]
    while acks[0] < 5:
        acks[0] += (await members[0][1].receive())["type"] == "ok"
    for (_, transport), before, acked in zip(members, writes_before, acks, strict=True):
        assert transport.writes == before + 1 + acked  # five messages in one write
        messages = [f for f in transport.events() if f["type"] == "message"]
        assert [m["offset"] for m in messages] == [1, 2, 3, 4, 5]


async def test_fanout_skips_offsets_already_delivered(node: Node) -> None:
    session, transport = await fake_session(node)
    await session.handle(b'{"type":"join","room":"r","id":1}')
    epoch = (await transport.receive())["epoch"]
    node.hub.fanout("r", epoch, [(1, b'{"n":1}'), (2, b'{"n":2}')])
    node.hub.fanout("r", epoch, [(2, b'{"n":2}'), (3, b'{"n":3}')])  # 2 again
    node.hub.fanout("r", epoch, [(1, b'{"n":1}')])
    assert transport.take() == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert node.hub.get("r") is not None
    assert node.hub.rooms["r"].top == 3


async def test_rooms_exist_exactly_while_they_have_members(node: Node) -> None:
    a, _ = await fake_session(node, "a")
    b, _ = await fake_session(node, "b")
    await a.handle(b'{"type":"join","room":"r"}')
    await b.handle(b'{"type":"join","room":"r"}')
    assert list(node.hub.rooms) == ["r"]
    await a.handle(b'{"type":"leave","room":"r"}')
    assert list(node.hub.rooms) == ["r"]
    node.close_session(b)
    assert node.hub.rooms == {}


async def test_a_gap_in_the_live_stream_is_filled_from_history(node: Node) -> None:
    from roomcast.brokers.base import Publication
    from roomcast.brokers.memory import MemoryBroker
    from roomcast.history.base import Record

    session, transport = await fake_session(node)
    await session.handle(b'{"type":"join","room":"g","id":1}')
    epoch = (await transport.receive())["epoch"]
    broker = node.broker
    assert isinstance(broker, MemoryBroker)
    payloads = {n: json.dumps({"type": "message", "offset": n}).encode() for n in range(1, 6)}
    await broker.store.append([Record("g", n, 1, payloads[n]) for n in range(1, 6)])
    deliver = node._deliver  # as a broker would: 1, then 4 and 5 (2 and 3 skipped), then 3
    deliver([Publication("g", epoch, 1, payloads[1])])
    deliver([Publication("g", epoch, 4, payloads[4]), Publication("g", epoch, 5, payloads[5])])
    deliver([Publication("g", epoch, 3, payloads[3])])
    offsets = [(await transport.receive())["offset"] for _ in range(5)]
    assert offsets == [1, 2, 3, 4, 5]
    assert node.hub.rooms["g"].top == 5
    assert node.hub.rooms["g"].backlog is None

"""Presence in NATS JetStream against real ``nats-server`` processes: several stores in
one process stand for several nodes. Deadlines follow a clock of the test's own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest

from roomcast.config import Settings
from roomcast.exceptions import BrokerError
from roomcast.history.base import now_ms
from roomcast.presence import create_presence
from roomcast.presence.nats import NatsPresence
from roomcast.protocol import Member
from roomcast.testing_nats import NatsProcess, nats_server_binary

pytestmark = pytest.mark.skipif(nats_server_binary() is None, reason="no nats-server")

TTL = 30.0
Connect = Callable[..., Awaitable[NatsPresence]]


class Clock:
    """Unix ms that move only when the test says."""

    def __init__(self) -> None:
        self.now = now_ms()

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)


def member(n: int) -> Member:
    return Member(f"s-{n}_x", f"user{n}")


def users(members: list[Member]) -> list[str]:
    return sorted(m.user for m in members)


def gone_users(gone: dict[str, list[Member]]) -> dict[str, list[str]]:
    return {room: users(members) for room, members in gone.items()}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("roomcast.presence.nats.now_ms", fake)
    return fake


@pytest.fixture
async def connect(nats_server: NatsProcess, clock: Clock) -> AsyncIterator[Connect]:
    stores: list[NatsPresence] = []

    async def make(**options: Any) -> NatsPresence:
        options.setdefault("ttl", TTL)
        options.setdefault("reconnect_wait", 0.1)
        store = NatsPresence(nats_server.url, **options)
        stores.append(store)
        await store.open()
        await asyncio.wait_for(store.ready.wait(), 10)
        return store

    yield make
    for store in stores:
        await store.close()


async def test_members_are_shared_added_once_and_removed_once(connect: Connect) -> None:
    a, b = await connect(), await connect()
    room = "eu.lobby:a@b-c d"  # dots, dashes and spaces stay in one subject token
    assert await a.add(room, member(1)) is True
    assert await b.add(room, member(2)) is True
    assert await a.add(room, member(1)) is False  # there already: no news
    assert await a.add("eu", member(3)) is True  # "eu" is not a prefix of the room above
    for store in (a, b):
        assert users(await store.members(room)) == ["user1", "user2"]
        assert users(await store.members("eu")) == ["user3"]
        assert await store.members("nobody") == []
    assert await b.remove(room, member(1)) is True  # any node may remove any member
    assert await a.remove(room, member(1)) is False  # gone already: no second `left`
    assert users(await a.members(room)) == ["user2"]


async def test_members_hide_expired_entries_and_refresh_keeps_them(
    connect: Connect, clock: Clock
) -> None:
    a, b = await connect(), await connect()
    await a.add("r", member(1))
    await a.add("r", member(2))
    await a.add("r", member(3), ttl=100)  # a long-poll member: its own deadline
    clock.advance(20)
    await a.refresh({"r": [member(1), member(4)]})  # 4 was never added: not written
    clock.advance(20)  # 40 s after the adds, 20 s after the refresh
    assert users(await b.members("r")) == ["user1", "user3"]
    assert await b.expire(["r"]) == {"r": [member(2)]}
    assert users(await b.members("r")) == ["user1", "user3"]
    clock.advance(70)
    assert gone_users(await b.expire(["r"])) == {"r": ["user1", "user3"]}
    assert await b.members("r") == []


async def test_refresh_skips_members_removed_meanwhile(connect: Connect, clock: Clock) -> None:
    a = await connect()
    await a.add("r", member(1))
    await a.add("r", member(2))
    await a.remove("r", member(1))
    await a.refresh({"r": [member(1), member(2)]})  # a snapshot taken before the remove
    assert await a.members("r") == [member(2)]
    clock.advance(TTL + 1)
    assert await a.expire(["r"]) == {"r": [member(2)]}


async def test_racing_sweeps_expire_each_member_exactly_once(
    connect: Connect, clock: Clock
) -> None:
    a, b, c = await connect(), await connect(), await connect()
    rooms = [f"room{n}" for n in range(4)]
    for n in range(80):
        await c.add(rooms[n % 4], member(n))
    await c.refresh({"room0": [member(0)]})  # a newer entry, the same deadline
    clock.advance(TTL + 1)
    results = await asyncio.gather(a.expire(rooms), b.expire(rooms), c.expire(rooms))
    got = sorted(
        (int(m.user[4:]), room) for result in results for room, ms in result.items() for m in ms
    )
    assert got == [(n, rooms[n % 4]) for n in range(80)]  # each once, in its room
    for room in rooms:
        assert await a.members(room) == []
    assert await b.expire(rooms) == {}


async def test_of_sweeps_that_saw_the_same_expired_entry_one_deletes_it(
    connect: Connect, clock: Clock
) -> None:
    """The step that makes expiry atomic: deleting an entry by its stream sequence."""
    a, b = await connect(), await connect()
    await a.add("r", member(1))
    await a.add("r", member(2))
    clock.advance(TTL + 1)
    seen = await a._entries("r")
    assert [(entry.member, entry.deadline < clock.now) for _, entry in seen] == [
        (member(1), True),
        (member(2), True),
    ]
    assert await b._entries("r") == seen  # both sweeps found both expired
    await a.refresh({"r": [member(2)]})  # 2's refresh comes before the deletes
    (one, _), (two, _) = seen
    assert sorted(await asyncio.gather(a._delete(one), b._delete(one))) == [False, True]
    assert list(await asyncio.gather(a._delete(two), b._delete(two))) == [False, False]
    assert await b.members("r") == [member(2)]


async def test_a_refresh_wins_over_a_sweep_that_comes_after(connect: Connect, clock: Clock) -> None:
    a, b = await connect(), await connect()
    await a.add("r", member(1))
    clock.advance(TTL + 1)  # expired: a's refreshes came late
    await a.refresh({"r": [member(1)]})
    assert await b.expire(["r"]) == {}
    assert await b.members("r") == [member(1)]


async def test_no_expiry_for_a_ttl_after_connecting(connect: Connect, clock: Clock) -> None:
    a = await connect()
    await a.add("r", member(1))
    clock.advance(TTL + 1)
    late = await connect()  # as a node just back: the others had no chance to refresh
    assert await late.expire(["r"]) == {}
    clock.advance(TTL)
    assert await late.expire(["r"]) == {"r": [member(1)]}


async def test_nats_down_fails_fast_and_members_are_rewritten_after(
    connect: Connect, nats_server: NatsProcess, clock: Clock
) -> None:
    a, b = await connect(), await connect()
    await a.add("r", member(1))
    await a.add("r", member(9), ttl=5)  # a long-poll member: not rewritten
    in_flight = [asyncio.ensure_future(b.members(f"room{n}")) for n in range(20)]
    started = time.monotonic()
    nats_server.kill()
    outcomes = await asyncio.gather(*in_flight, return_exceptions=True)
    assert all(isinstance(outcome, BrokerError) for outcome in outcomes)
    assert time.monotonic() - started < 2.0  # at once, not after the 5 s timeout
    for store in (a, b):
        await asyncio.wait_for(store.offline.wait(), 10)
    started = time.monotonic()
    with pytest.raises(BrokerError):
        await a.add("r", member(2))  # kept: written once NATS is back
    with pytest.raises(BrokerError):
        await b.members("r")
    with pytest.raises(BrokerError):
        await b.expire(["r"])
    assert time.monotonic() - started < 1.0  # at once, not after the 5 s timeout
    clock.advance(TTL + 1)  # every entry expires while NATS is away
    nats_server.start()  # the same port and store
    for store in (a, b):
        await asyncio.wait_for(store.ready.wait(), 10)
    assert users(await b.members("r")) == ["user1", "user2"]  # a wrote its own again
    assert await b.expire(["r"]) == {}  # b is just back: no expiry for a TTL
    clock.advance(TTL / 2)
    await a.refresh({"r": [member(1), member(2)]})
    clock.advance(TTL / 2)
    assert await b.expire(["r"]) == {"r": [member(9)]}
    assert users(await b.members("r")) == ["user1", "user2"]


async def test_a_stream_deleted_under_the_store_is_made_again(
    connect: Connect, nats_server: NatsProcess
) -> None:
    a = await connect()
    await a.add("r", member(1))
    nc = await nats.connect(nats_server.url)
    assert await nc.jetstream().delete_stream("ROOMCAST_PRESENCE")
    await nc.close()
    assert await a.members("r") == []
    assert await a.add("r", member(2)) is True
    assert await a.members("r") == [member(2)]


def test_settings_select_nats_presence() -> None:
    url = "tls://u:p@127.0.0.1:4222,127.0.0.1:4223?stream=CHAT&prefix=acme.x&replicas=3"
    settings = Settings(broker=url, history="memory", presence_ttl=6, node_id="n1")
    store = create_presence(settings, hub=None)  # type: ignore[arg-type]
    assert isinstance(store, NatsPresence)  # not connected until opened
    assert store.servers == ["tls://u:p@127.0.0.1:4222", "tls://127.0.0.1:4223"]
    assert (store.stream, store.prefix, store.replicas) == ("CHAT_PRESENCE", "acme.x", 3)
    assert (store.ttl, store.interval) == (6, 2)


async def test_a_store_starts_without_nats_and_writes_when_it_comes(
    tmp_path: Path, clock: Clock
) -> None:
    server = NatsProcess(tmp_path / "late")
    store = NatsPresence(server.url, ttl=TTL, reconnect_wait=0.1)
    started = time.monotonic()
    await store.open()  # returns at once, goes on trying
    try:
        assert time.monotonic() - started < 2 and not store.ready.is_set()
        with pytest.raises(BrokerError):
            await store.add("r", member(1))  # a member of this node: kept, written later
        with pytest.raises(BrokerError):
            await store.members("r")
        server.start()
        await asyncio.wait_for(store.ready.wait(), 10)
        assert await store.members("r") == [member(1)]
        nc = await nats.connect(server.url)
        info = await nc.jetstream().stream_info("ROOMCAST_PRESENCE")
        await nc.close()
        assert info.config.subjects == ["roomcast.presence.>"]
        assert (info.config.max_msgs_per_subject, info.config.max_age) == (1, 3600)
    finally:
        await store.close()
        server.close()

"""Live fuzzing of a session: a client sends random frames to a real server while a
well-behaved member sits in the room it publishes to.

Whatever the fuzzer sends (random bytes as binary frames, random text, random JSON,
commands of every type with random fields, oversized data, bad rooms, then maybe a frame
over --max-message-size), it gets exactly one ``ok``/``error``/``pong`` per frame and
only events of the protocol, or a close 1009 for the oversized frame; the member receives
exactly the messages the fuzzer got an ``ok`` for, each once, in offset order, and
nothing else; the server stays up, with nothing in its log at ERROR.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import websockets
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import strategies as st

from roomcast.exceptions import CloseCode
from roomcast.protocol import COMMAND_TYPES, DEFAULT_MAX_DEPTH
from roomcast.testing import ServerProcess

MAX_MESSAGE = 4096
MAX_DATA = 1024
REPLIES = {"ok", "error", "pong"}
EVENTS = {"message", "joined", "left"}
TIMEOUT = 10.0
EXAMPLES = int(os.environ.get("ROOMCAST_FUZZ_EXAMPLES", "1000"))  # about 15-40 s
INT64 = st.integers(-(2**63), 2**63 - 1)  # wider integers: test_integers_beyond_64_bits
names = itertools.count()


class RoomRef(enum.Enum):
    """A room of the example, named when it runs (every example has fresh rooms)."""

    WATCHED = "watched"  # the member is in it
    OTHER = "other"


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[ServerProcess]:
    args = ["--max-message-size", str(MAX_MESSAGE), "--max-data-size", str(MAX_DATA)]
    with ServerProcess(args) as server:  # the default SQLite history
        yield server


# -- strategies -----------------------------------------------------------------------


def json_values(ints: st.SearchStrategy[int]) -> st.SearchStrategy[Any]:
    leaves = (
        st.none() | st.booleans() | ints | st.text(max_size=20)
        | st.floats(allow_nan=True, allow_infinity=True)  # NaN, Infinity: not JSON
        | st.sampled_from(["NaN", "Infinity", "1e999", "-0", "__proto__", "", "\x00"])
    )  # fmt: skip
    return st.recursive(
        leaves,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=12,
    )


any_json = json_values(st.integers())  # data may hold integers of any size
field_json = json_values(INT64)
bad_rooms = st.sampled_from(["", "a b", "x" * 129, "é", "a/b", "lobby\n", "*", "\x00"])
room_values = st.sampled_from(list(RoomRef)) | bad_rooms | field_json
big_data = st.integers(MAX_DATA + 1, MAX_MESSAGE - 200).map(lambda size: "x" * size)
command_fields: dict[str, st.SearchStrategy[Any]] = {
    "room": room_values,
    "id": st.none() | st.integers() | st.text(max_size=10) | field_json,
    "data": any_json | big_data,
    "limit": INT64 | field_json,
    "before": INT64 | field_json,
    "since": st.fixed_dictionaries({"epoch": st.text(max_size=10), "offset": INT64}) | field_json,
    "token": st.text(max_size=20) | field_json,
}
types = st.sampled_from(sorted(COMMAND_TYPES)) | st.sampled_from(["JOIN", "pong", "message", ""])
random_commands = st.fixed_dictionaries({"type": types}, optional=command_fields)


def nested(depth: int) -> Any:
    value: Any = depth
    for _ in range(depth):
        value = [value]
    return value


deep = st.integers(1, 3 * DEFAULT_MAX_DEPTH).map(nested)  # --max-json-depth: 32
publishes = st.fixed_dictionaries(
    {
        "type": st.just("publish"),
        "room": st.just(RoomRef.WATCHED),
        "data": any_json | deep | big_data,
    }
)
moves = st.fixed_dictionaries(
    {"type": st.sampled_from(["join", "leave"]), "room": st.sampled_from(list(RoomRef))}
)
actions = st.one_of(
    st.tuples(st.just("command"), random_commands | publishes | moves),
    st.tuples(st.just("command"), random_commands | publishes),
    st.tuples(st.just("binary"), st.binary(max_size=200)),
    st.tuples(st.just("text"), st.text(max_size=200)),
    st.tuples(st.just("json"), any_json),
)
oversized = st.none() | st.integers(MAX_MESSAGE + 1, 3 * MAX_MESSAGE)


# -- one example ----------------------------------------------------------------------


@dataclass
class Script:
    """The frames of one example, rendered for its rooms."""

    watched: str
    other: str
    frames: list[str | bytes] = field(default_factory=list)
    published: dict[str, Any] = field(default_factory=dict)  # publish id -> its data

    def add(self, kind: str, value: Any) -> None:
        if kind in {"binary", "text"}:
            self.frames.append(value)
            return
        text = dumps(value) if kind == "json" else dumps(self.command(dict(value)))
        if len(text.encode()) > MAX_MESSAGE:  # only the last frame may be too big: cut it
            text = text.encode()[: MAX_MESSAGE - 4].decode(errors="ignore")
        self.frames.append(text)

    def command(self, command: dict[str, Any]) -> dict[str, Any]:
        room = command.get("room")
        if isinstance(room, RoomRef):
            command["room"] = self.watched if room is RoomRef.WATCHED else self.other
        if command["type"] == "publish" and command.get("room") == self.watched:
            command["id"] = f"pub-{len(self.frames)}"  # to tell its ok from a join's
            self.published[command["id"]] = command.get("data")
        return command


def dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=True, ensure_ascii=False)


class Client:
    def __init__(self, ws: websockets.ClientConnection, welcome: dict[str, Any]) -> None:
        self.ws = ws
        self.session: str = welcome["session"]

    @classmethod
    async def connect(cls, server: ServerProcess, name: str) -> Client:
        ws = await websockets.connect(f"{server.ws_url}?name={name}", max_size=None)
        welcome = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert welcome["type"] == "welcome"
        return cls(ws, welcome)

    async def recv(self) -> dict[str, Any]:
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
        assert frame["type"] in REPLIES | EVENTS, frame
        return frame

    async def request(self, **command: Any) -> dict[str, Any]:
        await self.ws.send(json.dumps(command))
        while (frame := await self.recv())["type"] not in REPLIES:
            pass
        assert (frame["type"], frame.get("id")) == ("ok", command["id"]), frame
        return frame


async def replies(fuzzer: Client, count: int) -> list[dict[str, Any]]:
    """Read until ``count`` replies came; then a ping's pong must be the next reply."""
    got: list[dict[str, Any]] = []
    while len(got) < count:
        try:
            frame = await fuzzer.recv()
        except TimeoutError:
            pytest.fail(f"{len(got)} replies to {count} frames: {got}")
        if frame["type"] in REPLIES:
            got.append(frame)
    await fuzzer.ws.send('{"type":"ping","id":"barrier"}')
    while (frame := await fuzzer.recv())["type"] not in REPLIES:
        pass
    assert frame == {"type": "pong", "id": "barrier"}, ("a reply too many", frame, got)
    return got


async def closed_with_1009(fuzzer: Client, size: int) -> None:
    await fuzzer.ws.send("x" * size)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await fuzzer.recv()
    assert closed.value.rcvd is not None, "dropped without a close frame"
    assert closed.value.rcvd.code == CloseCode.MESSAGE_TOO_BIG


async def run_example(
    server: ServerProcess, steps: list[tuple[str, Any]], too_big: int | None
) -> None:
    n = next(names)
    script = Script(watched=f"fuzz-{n}", other=f"fuzz-{n}-other")
    for kind, value in [("command", {"type": "join", "room": RoomRef.WATCHED}), *steps]:
        script.add(kind, value)
    member = await Client.connect(server, f"member{n}")
    fuzzer = await Client.connect(server, f"fuzzer{n}")
    try:
        epoch = (await member.request(type="join", room=script.watched, id=1))["epoch"]
        for frame in script.frames:
            await fuzzer.ws.send(frame)
        got = await replies(fuzzer, len(script.frames))
        if too_big is not None:
            await closed_with_1009(fuzzer, too_big)
        acked = [r for r in got if r["type"] == "ok" and r.get("id") in script.published]
        for reply in acked:
            assert (reply["room"], reply["epoch"]) == (script.watched, epoch), reply
        await check_member(server, member, script, acked, fuzzer.session)
    finally:
        await fuzzer.ws.close()
        await member.ws.close()


async def check_member(
    server: ServerProcess, member: Client, script: Script, acked: list[dict[str, Any]],
    fuzzer: str,
) -> None:  # fmt: skip
    """A fresh client publishes a last message; before it, the member got exactly the
    fuzzer's acknowledged messages, in offset order, and joined/left events."""
    fresh = await Client.connect(server, "fresh")
    try:
        await fresh.request(type="join", room=script.watched, id=1)
        last = await fresh.request(type="publish", room=script.watched, data="last", id=2)
    finally:
        await fresh.ws.close()
    expected = sorted(acked, key=lambda reply: reply["offset"])
    assert [reply["offset"] for reply in expected] == list(range(1, len(acked) + 1))
    assert last["offset"] == len(acked) + 1  # nothing unacknowledged was stored
    messages = []
    while (frame := await member.recv()).get("offset") != last["offset"]:
        if frame["type"] == "message":
            messages.append(frame)
        else:
            assert frame["type"] in {"joined", "left"}, frame
            assert frame["member"]["session"] in {fuzzer, fresh.session}, frame
    assert [m["offset"] for m in messages] == [reply["offset"] for reply in expected]
    for message, reply in zip(messages, expected, strict=True):
        assert message["from"]["session"] == fuzzer
        assert message["data"] == json.loads(dumps(script.published[reply["id"]]))


# -- tests ----------------------------------------------------------------------------


def test_a_fuzzing_client_cannot_break_a_session_or_a_room(fuzz_server: ServerProcess) -> None:
    # No shrinking: a failing example waits for its timeouts, so shrinking would take
    # minutes; the example is printed whole (a list of at most 25 frames).
    @settings(
        max_examples=EXAMPLES, deadline=None, database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )  # fmt: skip
    @given(st.lists(actions, max_size=25), oversized)
    def fuzz(steps: list[tuple[str, Any]], too_big: int | None) -> None:
        note(f"steps={steps!r}, too_big={too_big!r}")
        asyncio.run(run_example(fuzz_server, steps, too_big))

    before = len(fuzz_server.log())
    fuzz()
    assert fuzz_server.process is not None and fuzz_server.process.poll() is None
    log = fuzz_server.log()[before:]
    assert " ERROR " not in log and "Traceback" not in log, log[-5000:]


async def test_integers_beyond_64_bits_are_bad_requests(fuzz_server: ServerProcess) -> None:
    """History stores take 64-bit integers: a larger `before` or `since.offset` is refused
    as a bad request, not failed as an internal error."""
    client = await Client.connect(fuzz_server, "wide")
    try:
        epoch = (await client.request(type="join", room="wide-ints", id="in"))["epoch"]
        await client.request(type="publish", room="wide-ints", data=1, id="one")
        for n, before in enumerate([2**63, -(2**63) - 1, 2**70]):
            await expect_bad_request(client, type="history", room="wide-ints", before=before, id=n)
        await client.request(type="leave", room="wide-ints", id="out")
        since = {"epoch": epoch, "offset": -(2**70)}
        await expect_bad_request(client, type="join", room="wide-ints", since=since, id="since")
    finally:
        await client.ws.close()


async def expect_bad_request(client: Client, **command: Any) -> None:
    await client.ws.send(json.dumps(command))
    while (frame := await client.recv())["type"] not in REPLIES:
        pass
    assert (frame["type"], frame["id"], frame["code"]) == ("error", command["id"], "bad_request")

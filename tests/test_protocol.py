"""The protocol layer on bytes and objects only: no sockets."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from roomcast.exceptions import ErrorCode, ProtocolError
from roomcast.protocol import (
    History,
    Join,
    Leave,
    Member,
    Ok,
    Ping,
    Presence,
    Publish,
    Since,
    decode_command,
    encode,
    encode_error,
    encode_message,
)


def test_decodes_every_command() -> None:
    assert decode_command(b'{"type":"join","room":"lobby","id":1}') == Join("lobby", 1)
    since = b'{"type":"join","room":"a","since":{"epoch":"e1","offset":7},"id":"x"}'
    assert decode_command(since) == Join("a", "x", Since("e1", 7))
    assert decode_command('{"type":"leave","room":"a"}') == Leave("a")
    assert decode_command(b'{"type":"presence","room":"a","id":2}') == Presence("a", 2)
    assert decode_command(b'{"type":"history","room":"a","limit":5,"before":9}') == History(
        "a", 5, 9
    )
    assert decode_command(b'{"type":"history","room":"a"}') == History("a", 100, None)
    assert decode_command(b'{"type":"ping"}') == Ping()


def test_publish_keeps_data_as_raw_json() -> None:
    command = decode_command(b'{"type":"publish","room":"r","data":{"a":[1,2,{"b":null}]},"id":3}')
    assert isinstance(command, Publish)
    assert bytes(command.data) == b'{"a":[1,2,{"b":null}]}'
    assert command.id == 3


def test_unknown_fields_are_ignored() -> None:
    assert decode_command(b'{"type":"ping","id":1,"extra":{"x":1}}') == Ping(1)


@pytest.mark.parametrize(
    ("frame", "code", "command_id"),
    [
        (b"not json", ErrorCode.BAD_REQUEST, None),
        (b"[1,2]", ErrorCode.BAD_REQUEST, None),
        (b'"join"', ErrorCode.BAD_REQUEST, None),
        (b'{"room":"a","id":4}', ErrorCode.BAD_REQUEST, 4),
        (b'{"type":7,"id":4}', ErrorCode.BAD_REQUEST, 4),
        (b'{"type":"dance","id":"d"}', ErrorCode.UNKNOWN_TYPE, "d"),
        (b'{"type":"join","id":5}', ErrorCode.BAD_REQUEST, 5),
        (b'{"type":"join","room":5,"id":5}', ErrorCode.BAD_REQUEST, 5),
        (b'{"type":"join","room":"a b","id":6}', ErrorCode.INVALID_ROOM, 6),
        (b'{"type":"join","room":"","id":6}', ErrorCode.INVALID_ROOM, 6),
        (b'{"type":"join","room":"' + b"r" * 129 + b'","id":6}', ErrorCode.INVALID_ROOM, 6),
        (b'{"type":"publish","room":"a","id":7}', ErrorCode.BAD_REQUEST, 7),
        (b'{"type":"history","room":"a","limit":0,"id":8}', ErrorCode.BAD_REQUEST, 8),
        (b'{"type":"join","room":"a","since":{"epoch":"e"},"id":9}', ErrorCode.BAD_REQUEST, 9),
        (b'{"type":"ping","id":true}', ErrorCode.BAD_REQUEST, None),
        (b'{"type":"ping","id":[1]}', ErrorCode.BAD_REQUEST, None),
    ],
)
def test_bad_frames_give_the_right_error(
    frame: bytes, code: str, command_id: str | int | None
) -> None:
    with pytest.raises(ProtocolError) as caught:
        decode_command(frame)
    assert caught.value.code == code
    assert caught.value.command_id == command_id


@pytest.mark.parametrize("field", ["data", "id"])
def test_deeply_nested_json_is_a_bad_request(field: str) -> None:
    nested = "[" * 20000 + "]" * 20000
    frame = '{"type":"publish","room":"r","data":1,"id":1}'.replace(
        f'"{field}":1', f'"{field}":{nested}'
    )
    with pytest.raises(ProtocolError) as caught:
        decode_command(frame)
    assert (caught.value.code, caught.value.message) == (
        "bad_request",
        "the JSON is nested too deeply",
    )


def test_room_names_accept_the_whole_alphabet() -> None:
    name = "Az09_.:@-" + "x" * 119
    assert decode_command(json.dumps({"type": "join", "room": name})) == Join(name)


def test_encodes_server_frames() -> None:
    assert encode(Ok(id=1, room="a", epoch="e", offset=0)) == (
        b'{"type":"ok","id":1,"room":"a","epoch":"e","offset":0}'
    )
    assert encode(Ok()) == b'{"type":"ok"}'
    message = encode_message("a", "e", 3, msgspec.Raw(b"[1]"), Member("s", "u"), 99)
    assert json.loads(message) == {
        "type": "message",
        "room": "a",
        "epoch": "e",
        "offset": 3,
        "data": [1],
        "from": {"session": "s", "user": "u"},
        "ts": 99,
    }
    assert json.loads(encode_message("a", "e", 1, msgspec.Raw(b"1"), None, 5))["from"] is None
    error = ProtocolError(ErrorCode.NOT_JOINED, "join first", 4)
    assert json.loads(encode_error(error)) == {
        "type": "error",
        "id": 4,
        "code": "not_joined",
        "message": "join first",
    }
    assert "id" not in json.loads(encode_error(ProtocolError("bad_request", "x")))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_protocol_error(frame: bytes) -> None:
    try:
        decode_command(frame)
    except ProtocolError as error:
        assert error.code in {ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_TYPE, ErrorCode.INVALID_ROOM}


@given(json_values, st.sampled_from(["join", "publish", "history", "ping", "x", None]))
def test_any_json_decodes_or_raises_protocol_error(value: object, kind: str | None) -> None:
    command = {"type": kind, "room": value, "data": value, "id": value, "limit": value}
    try:
        decode_command(json.dumps(command))
    except ProtocolError as error:
        assert error.code in {ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_TYPE, ErrorCode.INVALID_ROOM}

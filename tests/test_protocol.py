"""The protocol layer on bytes and objects only: no sockets."""

from __future__ import annotations

import pytest

from roomcast.exceptions import ErrorCode, ProtocolError
from roomcast.protocol import (
    History,
    Join,
    Leave,
    Ping,
    Presence,
    Publish,
    Since,
    decode_command,
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
        "the JSON is nested too deeply (more than 32 levels)",
    )


@pytest.mark.parametrize(("depth", "allowed"), [(3, True), (4, False)])
def test_the_nesting_limit_counts_the_whole_frame(depth: int, allowed: bool) -> None:
    data = "[" * (depth - 1) + "]" * (depth - 1)  # inside the command's own object
    frame = f'{{"type":"publish","room":"r","data":{data}}}'
    if allowed:
        command = decode_command(frame, max_depth=3)
        assert isinstance(command, Publish) and bytes(command.data) == data.encode()
    else:
        with pytest.raises(ProtocolError, match=r"more than 3 levels"):
            decode_command(frame, max_depth=3)


def test_bytes_that_are_not_utf8_are_a_bad_request() -> None:
    frame = b'{"type":"publish","room":"r","data":"' + bytes([0xC3]) + b'"}'
    with pytest.raises(ProtocolError) as caught:
        decode_command(frame)
    assert (caught.value.code, caught.value.message) == (
        "bad_request",
        "the frame is not valid UTF-8",
    )

"""Property-based tests of protocol v1 (sans I/O): whatever a client sends, decoding it gives
a command or a ``ProtocolError`` with a documented code, nothing else; valid commands
round-trip; every error frame has its fields.

The command types come from ``protocol.Command`` and ``protocol.COMMAND_TYPES``, and
commands are built field by field from their structs, so a new command type is covered
without changing this file.
"""

from __future__ import annotations

import json
import typing
from typing import Any

import msgspec
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from roomcast import protocol
from roomcast.exceptions import ErrorCode, ProtocolError
from roomcast.protocol import COMMAND_TYPES, ROOM_PATTERN, decode_command, encode_error

# The codes decode_command may raise (its docstring, docs/protocol.md).
DECODE_CODES = {ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_TYPE, ErrorCode.INVALID_ROOM}
ALL_CODES = sorted(
    value for name, value in vars(ErrorCode).items() if name.isupper() and isinstance(value, str)
)
COMMAND_CLASSES: dict[str, type[msgspec.Struct]] = {
    str(cls.__struct_config__.tag): cls for cls in typing.get_args(protocol.Command)
}
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- strategies -----------------------------------------------------------------------

ROOM_CHARS = "ABCXYZabcxyz0189_.:@-"
rooms = st.text(ROOM_CHARS, min_size=1, max_size=128)
bad_rooms = st.text(max_size=200).filter(lambda room: ROOM_PATTERN.fullmatch(room) is None)
command_ids = st.none() | st.integers() | st.text(max_size=20)
nan_ish = st.sampled_from(
    ["NaN", "nan", "Infinity", "-Infinity", "1e999", "-1e999", "-0", "0x10", "1_000", "٣",
     "null", "true", "undefined", "__proto__", "constructor", "ping", "lobby", ""]
)  # fmt: skip
json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: far beyond 64 bits too
    | st.floats(allow_nan=True, allow_infinity=True)  # json.dumps writes NaN, Infinity
    | st.text()
    | nan_ish
)
json_values = st.recursive(
    json_leaves,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=25,
)
# Objects that look like commands: a known (or nearly known) type and fields of any type.
command_like = st.fixed_dictionaries(
    {"type": st.sampled_from(sorted(COMMAND_TYPES)) | st.sampled_from(["JOIN", "pong", ""])},
    optional={
        "room": rooms | bad_rooms | json_values,
        "id": command_ids | json_values,
        "data": json_values,
        "limit": st.integers() | json_values,
        "before": st.integers() | json_values,
        "since": st.fixed_dictionaries({"epoch": st.text(), "offset": st.integers()}) | json_values,
        "token": st.text() | json_values,
        "extra": json_values,
    },
)


def dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=True, ensure_ascii=False)


json_frames = (json_values | command_like).map(dumps)


@st.composite
def mangled_frames(draw: st.DrawFn) -> str:
    """A command-like frame, cut short or with a character put in somewhere."""
    text = dumps(draw(command_like))
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(st.sampled_from(["", "\x00", "}", "{", '"', ",", "\\", "NaN"]))


def deep_frames(depth: int) -> str:
    return "[" * depth + "]" * depth


# -- decode_command -------------------------------------------------------------------


def decode_outcome(
    frame: str | bytes, max_depth: int = protocol.DEFAULT_MAX_DEPTH
) -> protocol.Command | ProtocolError:
    """Decode; a ProtocolError is returned (with a documented code), anything else raises."""
    try:
        command = decode_command(frame, max_depth)
    except ProtocolError as error:
        assert error.code in DECODE_CODES, (error.code, error.message)
        assert isinstance(error.message, str)
        assert error.message
        return error
    check_command(command)
    return command


def check_command(command: protocol.Command) -> None:
    tag = str(command.__struct_config__.tag)
    assert tag in COMMAND_TYPES
    assert type(command) is COMMAND_CLASSES[tag]
    if hasattr(command, "room"):
        assert isinstance(command.room, str)
        assert ROOM_PATTERN.fullmatch(command.room)
    if isinstance(command, protocol.History):
        assert command.limit >= 1
    if isinstance(command, protocol.Publish):  # fanned out as is inside text frames
        msgspec.json.decode(bytes(command.data))


def same_outcome(a: protocol.Command | ProtocolError, b: protocol.Command | ProtocolError) -> bool:
    if isinstance(a, ProtocolError) and isinstance(b, ProtocolError):
        return (a.code, a.command_id) == (b.code, b.command_id)
    return a == b


@SETTINGS
@given(st.binary(max_size=300))
@example(b"\xff\xfe")
@example(b'{"type":"ping","id":"\xc3"}')  # POST /send reads bytes: a 500 there
@example(b'{"type":"publish","room":"a","data":"\xc3"}')  # would break members with 1007
def test_any_bytes_decode_to_a_command_or_a_protocol_error(frame: bytes) -> None:
    decode_outcome(frame)


@SETTINGS
@given(st.text(max_size=300))
@example("")
@example("\x00")
def test_any_text_decodes_like_its_utf8_bytes(frame: str) -> None:
    assert same_outcome(decode_outcome(frame), decode_outcome(frame.encode()))


@SETTINGS
@given(json_frames | mangled_frames())
@example('{"type":"history","room":"a","limit":1e400}')
@example('{"type":"history","room":"a","limit":NaN}')
@example('{"type":"ping","id":1e400}')
@example('{"type":"join","room":"a","since":{"epoch":"e","offset":' + "9" * 5000 + "}}")
@example(deep_frames(100_000))
@example('{"type":"publish","room":"a","data":' + deep_frames(100_000) + "}")
def test_any_json_decodes_to_a_command_or_a_protocol_error(frame: str) -> None:
    assert same_outcome(decode_outcome(frame), decode_outcome(frame.encode()))


@SETTINGS
@given(command_like, st.integers() | st.text(max_size=20))
def test_an_error_carries_the_id_of_the_command(
    value: dict[str, Any], command_id: int | str
) -> None:
    """Once the frame is a JSON object with a valid id, every error about it has the id."""
    value["id"] = command_id
    try:
        frame = json.dumps(value, allow_nan=False)
    except ValueError:  # NaN or Infinity: not JSON, so no id can be read
        assume(False)
    assume(depth(value) <= protocol.DEFAULT_MAX_DEPTH)  # deeper: refused before reading
    outcome = decode_outcome(frame)
    if isinstance(outcome, ProtocolError):
        assert outcome.command_id == command_id
    else:
        assert outcome.id == command_id


def depth(value: Any) -> int:
    """How deeply arrays and objects nest in a JSON value (a scalar: 0)."""
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


@SETTINGS
@given(json_values | command_like, st.integers(1, 6))
def test_the_depth_limit_refuses_exactly_the_deeper_frames(value: Any, limit: int) -> None:
    frame = dumps(value)
    outcome = decode_outcome(frame, limit)
    if depth(value) > limit:
        assert isinstance(outcome, ProtocolError)
        assert outcome.code == ErrorCode.BAD_REQUEST
    else:
        assert same_outcome(outcome, decode_outcome(frame))


def test_a_str_with_a_lone_surrogate_is_a_bad_request() -> None:
    outcome = decode_outcome('{"type":"ping","id":"\ud800"}')
    assert isinstance(outcome, ProtocolError)


def test_every_command_type_has_a_struct() -> None:
    assert set(COMMAND_CLASSES) == COMMAND_TYPES


# -- round trip -----------------------------------------------------------------------

int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)  # larger: bad_request
raw_data = json_values.map(lambda value: msgspec.Raw(msgspec.json.encode(value)))
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "room": rooms,
    "id": command_ids,
    "data": raw_data,
    "limit": st.integers(min_value=1, max_value=2**63 - 1),
    "before": st.none() | int64s,
    "since": st.none() | st.builds(protocol.Since, epoch=st.text(), offset=int64s),
}


def commands_of(cls: type[msgspec.Struct]) -> st.SearchStrategy[msgspec.Struct]:
    """Commands of one type: known fields from FIELDS, any other one from its type."""
    fields = {
        field.name: FIELDS.get(field.name, st.from_type(field.type))
        for field in msgspec.structs.fields(cls)
    }
    return st.fixed_dictionaries(fields).map(lambda kwargs: cls(**kwargs))


commands = st.sampled_from(sorted(COMMAND_CLASSES)).flatmap(
    lambda tag: commands_of(COMMAND_CLASSES[tag])
)


@SETTINGS
@given(commands)
def test_valid_commands_round_trip(command: msgspec.Struct) -> None:
    frame = protocol.encode(command)
    assert decode_command(frame) == command
    assert decode_command(frame.decode()) == command
    assert json.loads(frame)["type"] == command.__struct_config__.tag


# -- encode_error ---------------------------------------------------------------------


@SETTINGS
@given(
    st.sampled_from(ALL_CODES),
    st.text(min_size=1),
    command_ids,
    command_ids,
)
def test_encode_error_is_an_error_frame(
    code: str, message: str, own_id: protocol.CommandId, reply_id: protocol.CommandId
) -> None:
    frame = json.loads(encode_error(ProtocolError(code, message, own_id), reply_id))
    expected: dict[str, Any] = {"type": "error", "code": code, "message": message}
    frame_id = reply_id if reply_id is not None else own_id
    if frame_id is not None:
        expected["id"] = frame_id
    assert frame == expected


def test_an_error_frame_has_a_message_even_an_empty_one() -> None:
    frame = json.loads(encode_error(ProtocolError(ErrorCode.BAD_REQUEST, "")))
    assert frame == {"type": "error", "code": "bad_request", "message": ""}
